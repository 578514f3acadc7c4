"""Fakes of what ds01q talks to. fake_pynvml is the only fake of GPU hardware."""
from tests.fakes.fake_pynvml import FakePynvml

__all__ = ["FakePynvml"]
