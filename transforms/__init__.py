"""Engine-free stage logic. Nothing here imports apache_beam or pyspark."""
