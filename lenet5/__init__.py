"""LeNet-5 (LeCun et al. 1998) on MNIST, composed from symconv's generated kernels."""
