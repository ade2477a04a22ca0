# Hand-off child, python floor (metric 3): python3 handoff.py <path>
# Same line protocol as handoff.mjs (sleep included); the lock is a blocking fcntl.lockf on a
# fresh descriptor. time.monotonic_ns() is CLOCK_MONOTONIC, like Node's
# process.hrtime.bigint().
import fcntl, os, sys, time

path = sys.argv[1]
fd = -1


def acquire():
    f = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(f, fcntl.LOCK_EX)
    return f


for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == 'hold':
        fd = acquire()
        print('held', flush=True)
    elif cmd == 'wait':
        print('waiting', flush=True)
        c0 = time.process_time_ns()
        t0 = time.monotonic_ns()
        fd = acquire()
        t1 = time.monotonic_ns()
        cpu_us = (time.process_time_ns() - c0) // 1000
        print(f'acq {t1} {t1 - t0} {cpu_us}', flush=True)
    elif cmd == 'sleep':
        c0 = time.process_time_ns()
        t0 = time.monotonic_ns()
        time.sleep(float(args[0]) / 1000)
        t1 = time.monotonic_ns()
        print(f'slept {t1 - t0} {(time.process_time_ns() - c0) // 1000}', flush=True)
    elif cmd == 'release':
        time.sleep(float(args[0]) / 1000)
        t = time.monotonic_ns()
        fcntl.lockf(fd, fcntl.LOCK_UN)
        os.close(fd)
        fd = -1
        print(f'rel {t}', flush=True)
