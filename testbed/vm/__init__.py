"""The emulated lab's access point as a small QEMU VM (real netem on any host kernel).

* :mod:`testbed.vm.build` -- kernel + initramfs from Debian packages, cached by package versions;
* :mod:`testbed.vm.cpio` -- a deterministic ``newc`` cpio writer (no host ``cpio`` needed);
* :mod:`testbed.vm.boot` -- taps (pyroute2), QEMU, per-run SSH keys with a pinned dropbear host
  key, teardown, and :func:`~testbed.vm.boot.clean_vms` for VMs a killed run left;
* :mod:`testbed.vm.shaping` -- netem inside the VM over SSH (rate, delay, jitter, loss, limit),
  offloads off on the shaped path, and the physical floor to compare transfers with.

See ``../shared/notes/vm-shaping-box.md`` (measured facts) and issue 7.
"""
