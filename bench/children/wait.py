# Blocking waiter, python floor: python3 wait.py <path>
# Prints "waiting", blocks in fcntl.lockf, then prints "acq <CLOCK_MONOTONIC ns>"
# and releases at stdin EOF.
import fcntl, os, sys, time

fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
print('waiting', flush=True)
fcntl.lockf(fd, fcntl.LOCK_EX)
print(f'acq {time.monotonic_ns()}', flush=True)
sys.stdin.read()
os.close(fd)
