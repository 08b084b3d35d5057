"""The emulated lab: hosts as network namespaces on this machine, one shared medium, and the
backends that put the AP/eNB and the medium somewhere (a namespace, a VM: ``testbed.vm``, or an
ns-3 simulation).

Who does what, from the bottom up (a module imports only modules above it in this list):

* :mod:`~testbed.lab.names` -- the owned names (run id, namespaces, interfaces, cgroups);
* :mod:`~testbed.lab.plan` -- the lab as data: roles, ``HostPlan``, ``LinkShape``, ``LabPlan``,
  the address plan, ``LabState`` and ``ShapingReport`` (the manifest's ``lab`` part), ``LabError``;
* :mod:`~testbed.lab.queue_math` -- a shaped queue in numbers: frame costs, token buckets, the
  per-station HTB tree (both shapers build from it);
* :mod:`~testbed.lab.procs` -- processes in /proc: start time, running (every thread), stopping
  with a bounded wait until they have exited;
* :mod:`~testbed.lab.netns` -- named network namespaces: create, remove, enter, run inside, the
  processes inside, delete an interface;
* :mod:`~testbed.lab.runs` -- run records (owner pid + start time) that keep ``testbed clean``
  off live runs;
* :mod:`~testbed.lab.cpu` -- CPU caps (cgroups) per host;
* :mod:`~testbed.lab.nsconfig` -- a host namespace's sysctls and segmentation offloads;
* :mod:`~testbed.lab.signals` -- SIGINT/SIGTERM deferred around lifecycle steps, SIGTERM as
  ``SystemExit`` while a lab is up;
* :mod:`~testbed.lab.host_shaping` -- the host kernel's qdisc trees over netlink, with a report of
  what the kernel holds;
* :mod:`~testbed.lab.cleanup` -- removing a run's owned objects by name (namespaces and the
  processes in them, interfaces, cgroups, record);
* :mod:`~testbed.lab.capabilities` -- what this kernel and machine offer (``testbed doctor``);
  :mod:`~testbed.lab.preflight` -- what a run needs before it starts;
* :mod:`~testbed.lab.management` -- the management veths the orchestrator reaches each host's
  sshd over, and the free-subnet picker (also for the VM's management /30);
* :mod:`~testbed.lab.sshd` -- one real OpenSSH server per emulated host, in its namespace;
* :mod:`~testbed.lab.base` -- ``LabBase``: the lifecycle every backend shares (checks, run
  record, sysctls, CPU caps, signals, teardown, state, reshape);
* :mod:`~testbed.lab.namespace_lab` -- the ``namespace`` backend (``NamespaceLab``);
* :mod:`~testbed.lab.cpuset` -- CPU isolation of the processing hosts (full, partial, none);
* :mod:`~testbed.lab.ns3_realtime` -- what both ns-3 simulator processes share: taps, the
  process's life, the lateness sampler and the stats file (C++);
* :mod:`~testbed.lab.ns3_lab` -- the ``ns3`` backend on a WiFi link (``Ns3Lab``): the hosts' taps
  joined by an 802.11g cell that :mod:`~testbed.lab.ns3_sim` (its own process, in the router's
  namespace) simulates in real time;
* :mod:`~testbed.lab.ns3_lte` -- the same on an LTE link (``Ns3LteLab``): a LENA eNB with its EPC,
  simulated by :mod:`~testbed.lab.ns3_lte_sim`; :mod:`~testbed.lab.ns3_backend` picks one of the
  two for the link;
* :mod:`~testbed.lab.fidelity` -- each backend's measured idle fidelity and the ``auto`` rule;
* :mod:`~testbed.lab.backends` -- the backend registry, the ``Lab`` interface the host set uses,
  the ``auto`` choice, and ``clean()`` (``testbed clean``) over every backend.

``testbed.emulated`` turns a scenario into a lab from the registry plus management links, keys,
sshd and SSH connections: the host set the orchestrator drives.
"""
