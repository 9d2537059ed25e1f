"""Raspberry Pi deployment of the int8 TFLite SqueezeNet.

``rpi/runtime/`` is what runs on the Pi, and all that ships there with the ``contract`` package (standard
library, numpy, a TFLite interpreter and, optionally, cv2 / picamera2): ``python -m rpi.runtime.app``.

The rest is the host side: ``deploy`` (``python -m rpi.deploy``: the commands), ``bundle`` (what is sent),
``transport`` (ssh, rsync/scp, the release manager ``remote`` piped to the Pi's python3), ``fleet``
(``python -m rpi.fleet``: Ansible rollouts) and ``sample`` (``python -m rpi.sample``: the sample video).
"""
