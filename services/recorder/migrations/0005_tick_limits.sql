-- Each tick keeps the day's reference price, ceiling and floor it was sent with (SSI RefPrice, Ceiling, Floor): an
-- analyst sees whether it traded at a limit, and the alerts service reads them from the classified trade.
ALTER TABLE ticks ADD COLUMN ref_price double precision, ADD COLUMN ceiling double precision,
    ADD COLUMN floor double precision;
