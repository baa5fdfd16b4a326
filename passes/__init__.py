"""marconi.passes"""
