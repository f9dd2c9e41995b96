"""Real Linux guests for the local AWS environment: every instance that local EC2 (moto) launches
boots a Debian 13 system under systemd-nspawn that runs its user data against an IMDSv2 emulator.

One module per concern:

* ``mirror``  - the Debian mirror the root filesystem is built from, read from the host's apt
                configuration (``python3 infra/local/guests/mirror.py`` prints it);
* ``network`` - the bridge, the IMDS network namespace, guest addresses, and their cleanup;
* ``imds``    - the IMDSv2 emulator (a standard-library HTTP server inside that namespace);
* ``nspawn``  - one guest: overlay of the shared root filesystem, systemd-nspawn, its cgroup;
* ``manager`` - EC2 calls seen by the router -> guests booted, stopped, rebooted, terminated.

The root filesystem is built by ``make rootfs`` (``rootfs/build.sh``) into ``.local/guest/rootfs``.
"""
