"""The response bank: every banked response as one Parquet row, written atomically, resumable.

See :mod:`masters.bank.schema` for the columns and :mod:`masters.bank.store` for the guarantees.
"""
