"""marconi.runtime"""
