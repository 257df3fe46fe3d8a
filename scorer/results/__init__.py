"""Stage 5, results: the results file (netCDF-style HDF5), written and read.

``schema`` is every dataset's name, dtype, dimensions and meaning, and the file header;
``writer`` writes a results file; ``stitch`` writes and checks files stitched from part files;
``reader`` opens, checks and reads them (arrays or a pandas table); ``compare`` compares two;
``table`` filters and exports one as CSV or Parquet.

May import: :mod:`scorer.contract`, :mod:`scorer.errors`, :mod:`scorer.atomic`, h5py and numpy
(pandas when a table is asked for). Nothing upstream: no images, no ONNX Runtime.
"""
