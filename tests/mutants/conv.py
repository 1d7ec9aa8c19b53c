"""Chapter 1 mutants: ``conv3x3`` functions with one mistake each."""
from torch import nn

from . import mutant


@mutant("conv3x3", "the convolution has a bias; the reference uses bias=False because BatchNorm follows")
def conv3x3_with_bias(inplanes, outplanes, stride=1):
    return nn.Conv2d(inplanes, outplanes, kernel_size=3, stride=stride, padding=1)  # bias left at True


@mutant("conv3x3", "padding is 0 but should be 1")
def conv3x3_no_padding(inplanes, outplanes, stride=1):
    return nn.Conv2d(inplanes, outplanes, kernel_size=3, stride=stride, bias=False)


@mutant("conv3x3", "stride is 1 but should be 2")
def conv3x3_ignores_stride(inplanes, outplanes, stride=1):
    return nn.Conv2d(inplanes, outplanes, kernel_size=3, padding=1, bias=False)


@mutant("conv3x3", "kernel_size is 1 but should be 3")
def conv3x3_is_1x1(inplanes, outplanes, stride=1):
    return nn.Conv2d(inplanes, outplanes, kernel_size=1, stride=stride, padding=1, bias=False)


@mutant("conv3x3", "is Sequential where the reference uses Conv2d", "Return the nn.Conv2d itself")
def conv3x3_wrapped(inplanes, outplanes, stride=1):
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, kernel_size=3, stride=stride, padding=1, bias=False))


@mutant("conv3x3", "returned None", "forget `return`")
def conv3x3_forgets_return(inplanes, outplanes, stride=1):
    nn.Conv2d(inplanes, outplanes, kernel_size=3, stride=stride, padding=1, bias=False)


@mutant("conv3x3", "not implemented yet", "raise NotImplementedError")
def conv3x3_student_stub(inplanes, outplanes, stride=1):
    raise NotImplementedError
