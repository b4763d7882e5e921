-- Every history query on ticks and candles selects by symbol and trading date, which their primary keys lead with
-- (and orders by TotalVol or minute, which come next): the (symbol, ts) and (symbol, minute) indexes served no query
-- and doubled the cost of every insert.
DROP INDEX IF EXISTS ticks_symbol_ts;
DROP INDEX IF EXISTS candles_1m_symbol_minute;
