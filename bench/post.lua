-- post.lua - wrk script: POST /chat with the bench body, for cross-checking
-- bench/loadgen against wrk by hand:
--   wrk -t2 -c64 -d5s --latency -s bench/post.lua http://127.0.0.1:PORT
local n = 0
request = function()
    n = n + 1
    local body = '{"message":"bench ' .. n .. '","model":"gpt-3.5-turbo","temperature":0.7}'
    return wrk.format("POST", "/chat", {["Content-Type"] = "application/json"}, body)
end
