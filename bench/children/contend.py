# Contending child, python floor (metric 7): python3 contend.py <lockPath> <counterPath>
# Same protocol as contend.mjs; the lock is a blocking fcntl.lockf on a fresh
# descriptor per acquisition.
import fcntl, json, os, sys, time

path, counter_path = sys.argv[1], sys.argv[2]
counter = os.open(counter_path, os.O_RDWR)


def bump():
    value = int(os.pread(counter, 16, 0).decode().strip()) + 1
    os.pwrite(counter, (str(value).rjust(15) + '\n').encode(), 0)


print('ready', flush=True)
_, start, end = sys.stdin.readline().split()
start, end = int(start), int(end)
time.sleep(max(0, (start - time.monotonic_ns()) / 1e9))
count = in_window = 0
waits = []
while time.monotonic_ns() < end:
    t0 = time.monotonic_ns()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    t1 = time.monotonic_ns()
    bump()
    fcntl.lockf(fd, fcntl.LOCK_UN)
    os.close(fd)
    count += 1
    if t1 <= end:
        in_window += 1
    waits.append((t1 - t0) / 1e6)
print('done ' + json.dumps({'count': count, 'inWindow': in_window, 'waits': waits}), flush=True)
