-- skystream: keyword counts per language group and minute (WindowedKeywordCount rows) into the
-- lake, for exploring in Superset or any Parquet reader.
-- Parameters: kafka, posts_topic, lake, languages (see sql/trends.sql).

CREATE TABLE posts (
    WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH (
    connector = 'kafka',
    bootstrap_servers = '${kafka:127.0.0.1:9092}',
    topic = '${posts_topic:bluesky.posts}',
    format = 'jetstream',
    group_id = 'skystream-keyword-counts'
);

CREATE TABLE keyword_counts WITH (
    connector = 'lake', path = '${lake:lake}/keyword_counts', partition_by = 'hour'
);

INSERT INTO keyword_counts
SELECT win['start'] AS window_start, win['end'] AS window_end, lang, keyword, count, distinct_authors
FROM (
    SELECT lang, keyword, count(*) AS count, count(DISTINCT did) AS distinct_authors,
           tumble(INTERVAL '1' MINUTE) AS win
    FROM (
        SELECT did, lang, unnest(keywords(text, langs)) AS keyword, event_time FROM (
            SELECT did, text, langs, coalesce(lower(split_part(langs[1], '-', 1)), 'und') AS lang, event_time
            FROM posts)
        WHERE '${languages:}' = '' OR array_has(string_to_array('${languages:}', ','), lang))
    GROUP BY lang, keyword, win);
