-- notifier: the acknowledgement is queued from complaint.received, the other notices
-- from case events on another topic, which the notifier may happen to handle first (a
-- consumer that lags, a redelivery). A complaint's notifications go out in
-- (precedence, id) order per channel, and the acknowledgement's precedence (0) puts it
-- before every other notice (1) of its complaint, whichever row was written first.
ALTER TABLE deliveries ADD COLUMN precedence smallint NOT NULL DEFAULT 1;
