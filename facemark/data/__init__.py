"""Datasets: the LaPa-layout reader and checks, synthetic faces, face boxes and their cache."""
