"""The web layer: the py4web app ``myapp`` and the server that runs it.

This package is the only part of hookline that imports py4web; its actions adapt py4web's
request to ``hookline.webio.Request``, call an engine handler, and write back its ``Response``.
"""
