"""The lab's access point as a small QEMU VM: real netem (and 802.11 radios) on any host kernel.

Who does what:

* :mod:`testbed.vm.packages` -- Debian packages for the image: versions, download, unpack (and
  the build's error and progress types);
* :mod:`testbed.vm.build` -- the image: kernel + initramfs assembled from those packages, smoke
  tested, cached by package versions;
* :mod:`testbed.vm.cpio` -- a deterministic ``newc`` cpio writer (no host ``cpio`` needed);
* :mod:`testbed.vm.boot` -- one VM: taps (pyroute2), QEMU, per-run SSH keys with a pinned dropbear
  host key, its management /30, teardown, and :func:`~testbed.vm.boot.clean_vms` for a QEMU a
  killed run left (called by ``testbed.lab.backends.clean``);
* :mod:`testbed.vm.shaping` -- netem inside the VM over SSH (rate, delay, jitter, loss, limit),
  offloads off on the shaped path, and the physical floor to compare transfers with;
* :mod:`testbed.vm.medium` -- the lab's shared medium in the VM: one queue per direction (netem,
  or the per-station HTB tree with netem leaves), read back and checked;
* :mod:`testbed.vm.radio` -- WiFi mode: hostapd and wpa_supplicant on mac80211_hwsim radios in
  the VM;
* :mod:`testbed.vm.lab` -- the ``vm`` lab backend (:class:`~testbed.vm.lab.VmLab`, a
  :class:`testbed.lab.base.LabBase`): host namespaces around the VM, the medium shaped in it;
* :mod:`testbed.vm.pair` -- the smallest VM lab (one namespace each side), for ``testbed vm
  check``, the fidelity benchmark and the tests.

Why and what it costs: ``docs/link-emulation-without-netem.md``.
"""
