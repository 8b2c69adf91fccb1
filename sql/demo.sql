-- skystream demo --counts: the most frequent keywords of a synthetic Bluesky firehose, per
-- sliding window: the naive ranking, beside which `skystream demo` shows what sql/trends.sql
-- finds trending in the same stream.
--
-- `skystream demo --counts` fills the placeholders (dollar-brace name:default) from its flags; to
-- run it by hand:
--   skystream run sql/demo.sql --set rate=40 --set speed=30 --set duration=2h
--
-- Event time runs `speed` times faster than the wall clock, so a 1-minute slide shows a new
-- table every 60/speed seconds. Planted bursts (keyword:start:duration:intensity[:lang]) rise
-- into the table while they last.

CREATE TABLE posts (
    WATERMARK FOR event_time AS event_time - INTERVAL '2' SECOND
) WITH (
    connector = 'synthetic',
    rate      = '${rate:40}',
    speed     = '${speed:30}',
    duration  = '${duration:2h}',
    start     = '${start:now}',
    seed      = '${seed:42}',
    bursts    = '${bursts:eclipse:12m:20m:12}',
    fast_forward = '${fast_forward:0s}',
    out_of_order = '1s'
);

CREATE TABLE trends WITH (connector = 'stdout', format = 'table');

-- Keywords of each post (URLs, mentions and stopwords removed; CJK handled).
CREATE VIEW post_keywords AS
SELECT did, unnest(keywords(text, langs)) AS keyword, event_time
FROM posts;

-- Counts per keyword over 10-minute windows sliding by 1 minute; a keyword needs at least
-- 3 distinct authors (one account repeating a word does not make it trend).
CREATE VIEW keyword_counts AS
SELECT keyword,
       count(*)            AS posts,
       count(DISTINCT did) AS authors,
       hop(INTERVAL '1' MINUTE, INTERVAL '10' MINUTE) AS win
FROM post_keywords
GROUP BY keyword, win
HAVING count(DISTINCT did) >= 3;

INSERT INTO trends
SELECT window_end, rank, keyword, posts, authors
FROM (
    SELECT win['end'] AS window_end, keyword, posts, authors,
           ROW_NUMBER() OVER (PARTITION BY win ORDER BY posts DESC, keyword) AS rank
    FROM keyword_counts
)
WHERE rank <= 10
ORDER BY window_end, rank;
