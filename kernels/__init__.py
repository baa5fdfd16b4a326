"""marconi.kernels"""
