import asyncio, time, uvloop, asyncpg, os, sys
from datetime import UTC, datetime
from tests.realdeps import create_database, drop_database, unique
from shared.db import _init_connection
from shared.ids import new_id
from notifier import repository as repo
from notifier.webhook import DeliveryResult
def backend_cpu(pid):
    f = open(f"/proc/{pid}/stat").read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
async def main():
    name = unique("vidq_pgcost_")
    url = await create_database(name)
    try:
        conn = await asyncpg.connect(url); await _init_connection(conn)
        for sql in sys.argv[1:]:
            await conn.execute(sql)
        await conn.execute("INSERT INTO clients (id, name, callback_secret) VALUES ('cli_1','c','whsec_x')")
        await conn.execute("INSERT INTO videos (id, client_id, status, source) VALUES ('vid_1','cli_1','ready','{}')")
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        body = b'{"x":' + b'1' * 1500 + b'}'
        tc = tr = 0.0; cc = cr = 0.0
        for round_ in range(25):
            evs = [repo.NewEvent(new_id("evt"), "video.ready", "vid_1", "cli_1", datetime.now(UTC), body) for _ in range(40)]
            ds = [repo.NewDelivery(new_id("dlv"), e.id, "cli_1", f"whk_{i}", f"whk_{i}", "http://x/") for e in evs for i in range(10)]
            c0 = backend_cpu(pid); t0 = time.perf_counter()
            await repo.claim_deliveries(conn, evs, ds, 45)
            c1 = backend_cpu(pid); t1 = time.perf_counter()
            await repo.record_attempts(conn, [repo.Attempt(d.id, DeliveryResult(200, 1, None, "ok"), False, "succeeded", None) for d in ds])
            c2 = backend_cpu(pid); t2 = time.perf_counter()
            if round_ >= 5:
                cc += c1 - c0; cr += c2 - c1; tc += t1 - t0; tr += t2 - t1
        n = 20 * 400
        print("per delivery: claim CPU %.3f ms wall %.3f; record CPU %.3f ms wall %.3f" % (cc/n*1000, tc/n*1000, cr/n*1000, tr/n*1000))
        await conn.close()
    finally:
        await drop_database(name)
uvloop.run(main())
