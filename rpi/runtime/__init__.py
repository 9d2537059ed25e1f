"""What runs on the Raspberry Pi: ``app`` (``python -m rpi.runtime.app``), ``model`` (interpreter + which
kernels run it), ``preprocess`` (frame -> int8 tensor, exactly as training prepared images), ``sources``
(cameras, video files, image directories), ``health`` (a release's known-answer test) and ``bench``.

This folder and the ``contract`` package are the bundle (rpi/bundle.py ships every file under them), so
nothing here may import torch, tensorflow or anything of the host side.
"""
