"""Where the counting models' statistics come from: pandas in memory, DuckDB out of core, Spark on a cluster.

A counting model (``bayesnet``, ``dp-bayesnet``) needs only aggregates — row counts, 1-D and 2-D
histograms of discretised columns, the public-fact histograms of ``privacy.statistics``. Each is
described once, as SQL generated from the schema, the encoder and the network's variables
(:mod:`clinsynth.engines.sql`) and run by :class:`clinsynth.engines.table.SqlTable`; the DuckDB
engine runs that SQL over a file, a glob of Parquet files or a DuckDB table, the Spark engine
(``spark_engine``) runs the same statements in Spark SQL's dialect, so only aggregates leave the
engine and memory is bounded by the model, not the rows. The pandas path (the models' own numpy code) stays for in-memory frames and gives
the same counts (tests hold them to it).
"""
