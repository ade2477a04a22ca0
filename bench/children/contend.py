# Contending child, python floor (metric 7): python3 contend.py <lockPath> <counterPath> <n>
# Same protocol as contend.mjs; the lock is a blocking fcntl.lockf on a fresh
# descriptor per acquisition; the critical section reads the counter file and
# writes it back incremented.
import fcntl, json, os, sys, time

path, counter_path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])


def bump():
    with open(counter_path, 'rb') as f:
        value = int(f.read()) + 1
    with open(counter_path, 'wb') as f:
        f.write(str(value).encode())


print('ready', flush=True)
start = int(sys.stdin.readline().split()[1])
time.sleep(max(0, (start - time.monotonic_ns()) / 1e9))
waits = []
at = []
for _ in range(n):
    t0 = time.monotonic_ns()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    t1 = time.monotonic_ns()
    bump()
    fcntl.lockf(fd, fcntl.LOCK_UN)
    os.close(fd)
    waits.append((t1 - t0) / 1e6)
    at.append((t1 - start) // 1000)
print('done ' + json.dumps({'count': len(waits), 'waits': waits, 'at': at, 'endNs': time.monotonic_ns()}), flush=True)
