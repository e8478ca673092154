"""TUN devices through /dev/net/tun (ioctl only; addresses and routes go through netlink).

flanneld's udp backend opens `flannel0` with IFF_TUN|IFF_NO_PI: reads and writes are bare IP
packets, with no packet-information header. This agent adds IFF_MULTI_QUEUE (one queue per
forwarding worker) and IFF_VNET_HDR (a virtio-net header before each packet, through which TCP
segments received together are handed to the kernel as one), and makes the device persistent, so that routes into the overlay stay on the
device (instead of falling back to the default route) while the agent restarts.
"""

import errno
import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
IFNAMSIZ = 16


class TunError(OSError):
    """The TUN device cannot be opened as wanted; the message says why."""


def _attach(name, flags):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("%dsH" % IFNAMSIZ, name.encode(), flags))
    except OSError:
        os.close(fd)
        raise
    return fd


def open_queues(name, queues, flags=IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | IFF_VNET_HDR):
    """Attach `queues` file descriptors to TUN device `name` (created when absent) and make it
    persistent. A device of that name with other flags (a single-queue one left by flanneld,
    or a TAP) raises TunError with errno EINVAL: the caller deletes it and retries."""
    fds = []
    try:
        for _queue in range(queues):
            fds.append(_attach(name, flags))
        fcntl.ioctl(fds[0], TUNSETPERSIST, 1)
    except OSError as error:
        for fd in fds:
            os.close(fd)
        if error.errno == errno.ENOENT:
            raise TunError(error.errno, "/dev/net/tun is missing: the kernel has no TUN support "
                                        "(modprobe tun), or the container was started without it")
        if error.errno in (errno.EINVAL, errno.EBUSY):
            raise TunError(errno.EINVAL, "%s exists with other flags (not a multi-queue TUN with virtio-net headers)" % name)
        raise
    return fds
