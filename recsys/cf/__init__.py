"""Collaborative filtering: interaction matrix from SQL, implicit ALS/BPR, hybrid scoring."""
