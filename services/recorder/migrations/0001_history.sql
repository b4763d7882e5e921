-- stock-tracker history: every classified trade, foreign flow, index point and basis point, and 1-minute candles.
-- Every table is partitioned by trading date (one partition a day, created ahead of need by the recorder) and keyed
-- by the event's natural key, so a redelivered message inserts nothing twice. Times are timestamptz, exchange time.

CREATE TABLE ticks (
    symbol         text             NOT NULL,
    trading_date   date             NOT NULL,
    total_volume   bigint           NOT NULL,  -- the exchange's cumulative volume after the trade: the natural key
    ts             timestamptz      NOT NULL,
    price          double precision NOT NULL,
    volume         bigint           NOT NULL,
    value          double precision NOT NULL,
    trade_type     text             NOT NULL,  -- mua_chu_dong / ban_chu_dong / neutral
    rule           text             NOT NULL,  -- auction / exchange / quote / tick / none
    bid_price      double precision,
    ask_price      double precision,
    session        text,
    unseen_volume  bigint           NOT NULL DEFAULT 0,
    PRIMARY KEY (symbol, trading_date, total_volume)
) PARTITION BY RANGE (trading_date);
CREATE INDEX ticks_symbol_ts ON ticks (symbol, ts);

CREATE TABLE candles_1m (
    symbol          text             NOT NULL,
    trading_date    date             NOT NULL,
    minute          timestamptz      NOT NULL,
    open            double precision NOT NULL,
    high            double precision NOT NULL,
    low             double precision NOT NULL,
    close           double precision NOT NULL,
    volume          bigint           NOT NULL,
    value           double precision NOT NULL,
    buy_volume      bigint           NOT NULL,
    sell_volume     bigint           NOT NULL,
    neutral_volume  bigint           NOT NULL,
    unseen_volume   bigint           NOT NULL,
    trades          integer          NOT NULL,
    first_total     bigint           NOT NULL,  -- TotalVol of the minute's first and last trade: which price opens
    last_total      bigint           NOT NULL,  -- and closes, whatever order the batches arrive in
    PRIMARY KEY (symbol, trading_date, minute)
) PARTITION BY RANGE (trading_date);
CREATE INDEX candles_1m_symbol_minute ON candles_1m (symbol, minute);

CREATE TABLE foreign_flows (
    symbol                  text             NOT NULL,
    trading_date            date             NOT NULL,
    ts                      timestamptz      NOT NULL,
    buy_volume              bigint           NOT NULL,
    sell_volume             bigint           NOT NULL,
    buy_value               double precision NOT NULL,
    sell_value              double precision NOT NULL,
    cumulative_buy_volume   bigint           NOT NULL,
    cumulative_sell_volume  bigint           NOT NULL,
    cumulative_buy_value    double precision NOT NULL,
    cumulative_sell_value   double precision NOT NULL,
    PRIMARY KEY (symbol, trading_date, cumulative_buy_volume, cumulative_sell_volume, cumulative_buy_value,
                 cumulative_sell_value)
) PARTITION BY RANGE (trading_date);
CREATE INDEX foreign_flows_symbol_ts ON foreign_flows (symbol, ts);

CREATE TABLE index_points (
    index_id      text             NOT NULL,
    trading_date  date             NOT NULL,
    ts            timestamptz      NOT NULL,
    value         double precision NOT NULL,
    PRIMARY KEY (index_id, trading_date, ts, value)
) PARTITION BY RANGE (trading_date);
CREATE INDEX index_points_id_ts ON index_points (index_id, ts);

CREATE TABLE basis_points (
    futures_symbol  text             NOT NULL,
    trading_date    date             NOT NULL,
    ts              timestamptz      NOT NULL,
    futures_price   double precision NOT NULL,
    spot_value      double precision NOT NULL,
    basis           double precision NOT NULL,
    basis_pct       double precision NOT NULL,
    is_premium      boolean          NOT NULL,
    PRIMARY KEY (futures_symbol, trading_date, ts)
) PARTITION BY RANGE (trading_date);
CREATE INDEX basis_points_symbol_ts ON basis_points (futures_symbol, ts);
