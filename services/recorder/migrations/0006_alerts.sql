-- Every alert the alerts service raised (alert.<type>.<SYMBOL> on DERIVED), keyed by its natural key (trading date,
-- rule, symbol, exchange time), so an alert read twice is stored once. `values` holds what triggered it as a JSON
-- object of numbers (price, volume, mean, threshold ...): its keys differ by type.
CREATE TABLE alerts (
    type          text        NOT NULL,  -- volume_spike / ceiling_hit / ... / price_cross / change_beyond ...
    severity      text        NOT NULL,  -- info / warning / critical
    symbol        text        NOT NULL,  -- a symbol or a futures contract
    trading_date  date        NOT NULL,
    ts            timestamptz NOT NULL,  -- exchange time of the message that raised it
    rule          text        NOT NULL,  -- the built-in rule (its type) or the user rule's id
    "values"      jsonb       NOT NULL,
    message_vi    text        NOT NULL,
    message_en    text        NOT NULL,
    PRIMARY KEY (trading_date, rule, symbol, ts)
) PARTITION BY RANGE (trading_date);
CREATE INDEX alerts_ts ON alerts (ts);
