# Lock holder child, python floor: python3 hold.py <path>
# Holds a classic POSIX fcntl.lockf lock; prints "acquired"; releases at stdin EOF.
import fcntl, os, sys

fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print('acquired', flush=True)
sys.stdin.read()
fcntl.lockf(fd, fcntl.LOCK_UN)
os.close(fd)
print('released', flush=True)
