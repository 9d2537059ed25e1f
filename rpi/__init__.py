"""Raspberry Pi deployment of the int8 TFLite SqueezeNet.

Pi side (imports only the standard library, numpy, a TFLite interpreter and, optionally, cv2 / picamera2):
``app`` (``python -m rpi.app``), ``model`` (metadata + interpreter + which kernels run it), ``bench``
(``rpi.app --bench``), ``preprocess`` (frame -> int8 tensor, exactly as training prepared images),
``sources`` (cameras, video files, image directories), ``remote`` (the release manager that ``deploy`` runs
on the Pi over ssh).

Host side: ``deploy`` (``python -m rpi.deploy``: bundle, upload, activate, run, rollback, service) and
``sample`` (``python -m rpi.sample``: the sample video made from the test images).
"""
