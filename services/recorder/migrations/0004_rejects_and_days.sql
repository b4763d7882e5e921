-- Messages the database refused (a NUL byte in a text, a time it cannot store), set aside so the rest of their batch
-- and the batches after it are recorded: the family, the subject and stream position (one incarnation of DERIVED:
-- its creation time), the error, and the message as JSON text (JSON escapes control characters: never a NUL byte).
-- Keyed by the stream position, so a message read again (a restart, a second recorder) is kept once.
CREATE TABLE recorder_rejects (
    family           text        NOT NULL,
    subject          text        NOT NULL,
    stream_created   timestamptz NOT NULL,
    stream_sequence  bigint      NOT NULL,
    error            text        NOT NULL,
    message          text        NOT NULL,
    rejected_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_created, stream_sequence)
);

-- The trading dates each instrument has rows on, per table family, maintained by the recorder in the transaction of
-- each batch. The history API finds an instrument's latest day here with one index probe: max(trading_date) over a
-- partitioned table opens every daily partition. Candles come from the ticks, so they share the `ticks` family.
CREATE TABLE instrument_days (
    family        text NOT NULL,  -- ticks / foreign_flows / index_points / basis_points
    instrument    text NOT NULL,  -- symbol, index id or futures contract
    trading_date  date NOT NULL,
    PRIMARY KEY (family, instrument, trading_date)
);
-- From the candles rather than the ticks: the same days, from a few hundred rows per symbol-day instead of every trade.
INSERT INTO instrument_days SELECT DISTINCT 'ticks', symbol, trading_date FROM candles_1m;
INSERT INTO instrument_days SELECT DISTINCT 'foreign_flows', symbol, trading_date FROM foreign_flows;
INSERT INTO instrument_days SELECT DISTINCT 'index_points', index_id, trading_date FROM index_points;
INSERT INTO instrument_days SELECT DISTINCT 'basis_points', futures_symbol, trading_date FROM basis_points;
