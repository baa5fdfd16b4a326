"""marconi.planner"""
