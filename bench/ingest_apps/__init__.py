"""py4web apps folder for ``bench/ingest.py`` (``bare`` = the ceiling, ``naive`` = one DAL insert).

The bench does not serve this folder as is: for each run it makes a temporary apps folder in
which ``myapp`` is a symlink to one of these apps, so every target answers ``/myapp/webhook``
(the seed's path) and nothing is written into the repository.
"""
