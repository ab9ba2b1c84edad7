"""Put on PYTHONPATH of the nerfstudio commands that the tests run (see torchvision_cpu.py)."""

import torchvision_cpu

torchvision_cpu.install()
