"""Fleet rollouts with Ansible: one release to many Raspberry Pis, canary first (``python -m rpi.fleet``).

The playbooks here (rollout.yml, rollback.yml, status.yml) drive ``python -m rpi.deploy`` for each Pi of an
Ansible inventory; every step writes its result as JSON under artifacts/fleet/run*/, and report.py turns
those records into the fleet report. Host side only: nothing here is part of a bundle.
"""
