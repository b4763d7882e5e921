-- Where each table family's recorder stands in the DERIVED stream: committed in the same transaction as the rows
-- it covers, so the stream position and the data can never disagree. A position belongs to one incarnation of the
-- stream (its creation time): a stream deleted and created again starts over from its first message.
CREATE TABLE recorder_positions (
    family          text        PRIMARY KEY,
    sequence        bigint      NOT NULL,
    stream_created  timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
