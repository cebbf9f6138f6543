"""A FUSE file system of one read-only file whose reads are never answered: a page of it that a
process maps and never touches blocks whoever reads it through the process (/proc/PID/mem,
process_vm_readv) until the file system goes. Spoken directly over /dev/fuse (mounted by
mount(2) with the device's descriptor; root only), answering INIT, LOOKUP, GETATTR, OPEN and
RELEASE, and keeping every READ unanswered. stop() detaches the mount and closes the device,
which aborts the connection: the waiting readers get an error."""
import ctypes
import errno
import os
import select
import struct
import threading

FUSE_LOOKUP, FUSE_FORGET, FUSE_GETATTR, FUSE_OPEN, FUSE_READ = 1, 2, 3, 14, 15
FUSE_RELEASE, FUSE_FLUSH, FUSE_INIT, FUSE_OPENDIR, FUSE_RELEASEDIR = 18, 25, 26, 27, 29
FUSE_INTERRUPT, FUSE_BATCH_FORGET = 36, 42
ROOT, FILE = 1, 2
MS_NOSUID, MS_NODEV = 2, 4
MNT_DETACH = 2


def _attr(ino, mode, size):
    # struct fuse_attr: ino, size, blocks, [amc]time, [amc]timensec, mode, nlink, uid, gid,
    # rdev, blksize, flags
    return struct.pack("QQQQQQIIIIIIIIII", ino, size, (size + 511) // 512, 0, 0, 0, 0, 0, 0,
                       mode, 1, 0, 0, 0, 4096, 0)


class StallFs:
    def __init__(self, mountpoint, name="stall", size=1 << 20):
        self.mountpoint = mountpoint
        self.name = name.encode()
        self.size = size
        self.reads = 0  # READ requests left unanswered
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        opts = f"fd={self.fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
        if self._libc.mount(b"leakwatch-stall", mountpoint.encode(), b"fuse",
                            MS_NOSUID | MS_NODEV, opts) != 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, f"mount fuse on {mountpoint}: {os.strerror(err)}")
        self.path = os.path.join(mountpoint, name)
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _reply(self, unique, error=0, body=b""):
        try:
            os.write(self.fd, struct.pack("IiQ", 16 + len(body), -error, unique) + body)
        except OSError:
            pass  # the request was interrupted, or the connection is gone

    def _serve(self):
        # Polled, not blocked in read(): a read under way holds the device open, and the
        # connection is only aborted when the device's last reference goes.
        while not self._stopping:
            if not select.select([self.fd], [], [], 0.1)[0]:
                continue
            try:
                msg = os.read(self.fd, (1 << 20) + 4096)
            except OSError:
                return
            # struct fuse_in_header: len, opcode, unique, nodeid, uid, gid, pid, ...
            length, op, unique, node = struct.unpack_from("IIQQ", msg)
            body = msg[40:length]
            if op == FUSE_INIT:
                readahead = struct.unpack_from("III", body)[2]
                # struct fuse_init_out (7.31): major, minor, max_readahead, flags,
                # max_background, congestion_threshold, max_write, time_gran, max_pages,
                # map_alignment, flags2, unused
                self._reply(unique, 0, struct.pack("IIIIHHIIHHII", 7, 31, readahead, 0, 16, 12,
                                                   65536, 1, 32, 0, 0, 0) + b"\0" * 24)
            elif op == FUSE_LOOKUP:
                if node == ROOT and body.rstrip(b"\0") == self.name:
                    # struct fuse_entry_out: nodeid, generation, entry and attr validity
                    self._reply(unique, 0, struct.pack("QQQQII", FILE, 0, 3600, 3600, 0, 0) +
                                _attr(FILE, 0o100444, self.size))
                else:
                    self._reply(unique, errno.ENOENT)
            elif op == FUSE_GETATTR:
                a = _attr(ROOT, 0o40555, 0) if node == ROOT else _attr(FILE, 0o100444, self.size)
                self._reply(unique, 0, struct.pack("QII", 3600, 0, 0) + a)
            elif op in (FUSE_OPEN, FUSE_OPENDIR):
                self._reply(unique, 0, struct.pack("QII", 1, 0, 0))
            elif op == FUSE_READ:
                self.reads += 1  # never answered: the reader waits until stop()
            elif op in (FUSE_RELEASE, FUSE_FLUSH, FUSE_RELEASEDIR):
                self._reply(unique)
            elif op in (FUSE_FORGET, FUSE_BATCH_FORGET, FUSE_INTERRUPT):
                pass  # no answer expected
            else:
                self._reply(unique, errno.ENOSYS)

    def stop(self):
        if self.fd < 0:
            return
        self._libc.umount2(self.mountpoint.encode(), MNT_DETACH)
        self._stopping = True
        self._thread.join()
        fd, self.fd = self.fd, -1
        os.close(fd)  # aborts the connection: blocked readers get an error
