-- wrk script for bench/ingest.py: POST one new order per request as JSON.
--
--   wrk -t2 -c64 -d10s --latency -s bench/ingest_orders.lua http://127.0.0.1:PORT -- TAG [PATH]
--
-- order_id = TAG-<thread number>-<counter>: unique per request across wrk's threads (each
-- thread has its own number and counter) and across runs (bench/ingest.py passes a fresh random
-- TAG per run; without one, a time + random prefix is made up). The same TAG goes in an
-- X-Bench-Run header, so a receiver that stores headers (hookline's inbox) can be counted too.
-- Valid order_id characters are [A-Za-z0-9._:-], first one alphanumeric, at most 64.

local thread_count = 0

function setup(thread)
   -- Runs in the main Lua state, once per thread, before the threads start.
   thread_count = thread_count + 1
   thread:set("thread_no", thread_count)
end

local counter = 0
local prefix
local path
local headers

function init(args)
   local tag = args[1]
   if tag == nil or tag == "" then
      math.randomseed(os.time() + (thread_no or 0))
      tag = string.format("r%x%06x", os.time(), math.random(0, 0xffffff))
   end
   path = args[2] or "/myapp/webhook"
   prefix = tag .. "-" .. tostring(thread_no or 0) .. "-"
   headers = { ["Content-Type"] = "application/json", ["X-Bench-Run"] = tag }
end

function request()
   counter = counter + 1
   local body = '{"order_id": "' .. prefix .. counter
      .. '", "product_name": "kettle", "quantity": 1}'
   return wrk.format("POST", path, headers, body)
end
