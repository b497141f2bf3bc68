-- SPDX-License-Identifier: Apache-2.0
-- wrk script for bench/enqueue-rate.sh: every request POSTs one single-permission create
-- {"permissions":[{"displayName":"wT-N"}]} with a name unique to the run (T the wrk thread,
-- N its counter), asking for the 202 at once (Prefer: respond-async). At the end it prints
-- one line of wrk's error counts, which the script checks are all 0.
local threads = 0

function setup(thread)
        threads = threads + 1
        thread:set("tid", threads)
end

local counter = 0

function init(args)
        wrk.method = "POST"
        wrk.headers["Content-Type"] = "application/json"
        wrk.headers["Prefer"] = "respond-async"
end

function request()
        counter = counter + 1
        return wrk.format(nil, nil, nil,
                string.format('{"permissions":[{"displayName":"w%d-%08d"}]}', tid, counter))
end

function done(summary, latency, requests)
        local e = summary.errors
        io.write(string.format("errors connect=%d read=%d write=%d status=%d timeout=%d\n",
                e.connect, e.read, e.write, e.status, e.timeout))
end
