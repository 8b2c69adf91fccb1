-- skystream: what is trending on Bluesky — keywords rising unusually, not merely frequent.
--
-- For every language group, each minute:
--   recent    the last 5 minutes: a keyword's count n and its distinct authors
--   baseline  the 60 minutes before them: its count b
--   volume    posts of the language group in both periods (P_recent, P_baseline)
-- expected  = (b + 0.5) * P_recent / P_baseline        the baseline rate at today's volume,
--                                                     smoothed for words never seen before
-- score     = (a - expected)                          a Poisson z-score of the keyword's
--             / sqrt(expected * (1 + k) + 4)          distinct authors a in the recent window;
--                                                     k = P_recent / P_baseline adds the
--                                                     baseline's own noise (large while the
--                                                     baseline is short), and the floor of 4
--                                                     keeps rare words from scoring on noise
-- growth    = a / expected
-- Scoring distinct authors, not posts, is what keeps one account repeating a word (or a few
-- bots) from making it trend: they add posts, not authors. A keyword trends when
-- n >= min_count, a >= min_authors, score >= min_score, and the language group's
-- baseline holds at least min_baseline_posts posts and min_baseline_minutes (30) of the
-- hour: a stream that starts cold raises no alert until it has seen half an hour (its first
-- 65 minutes raised 14 false alarms an hour without this, 0 with it; `skystream eval`).
-- Starting with history avoids the wait: the Kafka source reads the topic from its earliest
-- offset (start = 'earliest', the default), so a topic holding the last hour fills the
-- baseline at once. Frequent words ("the", "lol", "good morning") have large baselines and
-- score near zero. The top `top` per minute, ranked by
-- score across language groups, are TrendAlert rows, written to Redis (a ranking per window),
-- a Kafka topic and the lake.
--
-- Run (Kafka holding Jetstream posts, e.g. from `skystream ingest`; Redis):
--   skystream run sql/trends.sql --checkpoint ./checkpoints
-- Parameters (--set name=value; "params" over HTTP): kafka, posts_topic, redis, redis_key,
-- alerts_topic, lake, languages (comma-separated language groups to keep, e.g. en,ja; empty:
-- all), min_count, min_authors, min_score, min_baseline_posts, min_baseline_minutes, top.
-- Another source or sink: --with posts.connector=synthetic --with posts.speed=60 (see README).
-- `skystream eval` measures this query's quality on planted bursts.

CREATE TABLE posts (
    WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH (
    connector = 'kafka',
    bootstrap_servers = '${kafka:127.0.0.1:9092}',
    topic = '${posts_topic:bluesky.posts}',
    format = 'jetstream',
    group_id = 'skystream-trends'
);

CREATE TABLE trend_alerts_redis WITH (
    connector = 'redis',
    url = '${redis:redis://127.0.0.1:6379}',
    layout = 'ranking',
    key = '${redis_key:trending}',
    window = 'window_end',
    member = 'keyword',
    score = 'score',
    ttl = '86400'
);

CREATE TABLE trend_alerts_kafka WITH (
    connector = 'kafka',
    bootstrap_servers = '${kafka:127.0.0.1:9092}',
    topic = '${alerts_topic:skystream.trend_alerts}',
    key = 'keyword'
);

CREATE TABLE trend_alerts_lake WITH (
    connector = 'lake',
    path = '${lake:lake}/trend_alerts',
    partition_by = 'day',
    time_column = 'window_end'
);

-- Posts with their language group: the primary subtag of the first language tag (en-US -> en;
-- none -> und), keeping the groups asked for.
CREATE VIEW lang_posts AS
SELECT did, text, langs, lang, event_time FROM (
    SELECT did, text, langs, coalesce(lower(split_part(langs[1], '-', 1)), 'und') AS lang, event_time
    FROM posts)
WHERE '${languages:}' = '' OR array_has(string_to_array('${languages:}', ','), lang);

-- Each keyword once per post (URLs, mentions and stopwords removed; CJK handled).
CREATE VIEW terms AS
SELECT did, lang, unnest(keywords(text, langs)) AS keyword, event_time FROM lang_posts;

CREATE VIEW recent AS
SELECT lang, keyword, count(*) AS n, count(DISTINCT did) AS authors,
       hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win
FROM terms
GROUP BY lang, keyword, win
HAVING count(*) >= ${min_count:8} AND count(DISTINCT did) >= ${min_authors:3};

-- The baseline hour and the recent 5 minutes: the baseline is this minus `recent`.
CREATE VIEW recent_and_baseline AS
SELECT lang, keyword, count(*) AS n, hop(INTERVAL '1' MINUTE, INTERVAL '65' MINUTE) AS win
FROM terms
GROUP BY lang, keyword, win;

CREATE VIEW recent_volume AS
SELECT lang, count(*) AS posts, hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win
FROM lang_posts GROUP BY lang, win;

-- first_post: how much of the baseline hour the stream has covered (the cold-start gate).
CREATE VIEW recent_and_baseline_volume AS
SELECT lang, count(*) AS posts, min(event_time) AS first_post,
       hop(INTERVAL '1' MINUTE, INTERVAL '65' MINUTE) AS win
FROM lang_posts GROUP BY lang, win;

-- The windows slide alike: their results are joined minute by minute.
CREATE VIEW expected AS
SELECT r.win['start'] AS window_start, r.win['end'] AS window_end, r.lang, r.keyword, r.n, r.authors,
       l.n - r.n AS baseline,
       (l.n - r.n + 0.5) * rv.posts / (lv.posts - rv.posts) AS expected,
       CAST(rv.posts AS DOUBLE) / (lv.posts - rv.posts) AS volume_ratio
FROM recent r
JOIN recent_and_baseline l
  ON r.lang = l.lang AND r.keyword = l.keyword AND r.win['end'] = l.win['end']
JOIN recent_volume rv ON r.lang = rv.lang AND r.win['end'] = rv.win['end']
JOIN recent_and_baseline_volume lv ON r.lang = lv.lang AND r.win['end'] = lv.win['end']
WHERE lv.posts - rv.posts >= ${min_baseline_posts:500}
  AND lv.first_post <= r.win['start'] - INTERVAL '${min_baseline_minutes:30}' MINUTE;

CREATE VIEW scored AS
SELECT *, (authors - expected) / sqrt(expected * (1.0 + volume_ratio) + 4.0) AS score,
       authors / expected AS growth
FROM expected;

-- TrendAlert rows. A keyword trending in several language groups at once (a word shared by
-- languages, or posts without a language tag) is one trend: its strongest group is kept.
CREATE VIEW trend_alerts AS
SELECT keyword, lang, window_start, window_end, n AS count, authors, expected, baseline,
       score, growth, rank
FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY window_end ORDER BY score DESC, keyword) AS rank
    FROM (
        SELECT *, ROW_NUMBER() OVER (PARTITION BY window_end, keyword ORDER BY score DESC, lang) AS by_lang
        FROM scored
        WHERE score >= ${min_score:5})
    WHERE by_lang = 1
)
WHERE rank <= ${top:10};

INSERT INTO trend_alerts_redis SELECT * FROM trend_alerts;
INSERT INTO trend_alerts_kafka SELECT * FROM trend_alerts;
INSERT INTO trend_alerts_lake SELECT * FROM trend_alerts;
