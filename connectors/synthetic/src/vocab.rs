//! Per-language vocabularies: common real words at the head of a Zipf distribution, and
//! pronounceable generated words for the long tail, plus function words that fill sentences.

use crate::rng::Rng;

/// A language of the synthetic firehose.
#[derive(Debug, Clone)]
pub struct Language {
    /// The `langs` tag posts carry (`None`: posts without `langs`).
    pub tag: Option<&'static str>,
    /// Share of posts.
    pub share: f64,
    /// Which vocabulary it writes in.
    pub vocab: &'static str,
}

/// The language mix of Bluesky posts (Dec 2025 sample): en ~61%, ja ~12.5%, none ~11%,
/// en-US ~3.6%, ko ~2.4%, the rest Portuguese, Spanish, German and French.
pub fn default_mix() -> Vec<Language> {
    vec![
        Language {
            tag: Some("en"),
            share: 0.61,
            vocab: "en",
        },
        Language {
            tag: Some("ja"),
            share: 0.125,
            vocab: "ja",
        },
        Language {
            tag: None,
            share: 0.11,
            vocab: "en",
        },
        Language {
            tag: Some("en-US"),
            share: 0.036,
            vocab: "en",
        },
        Language {
            tag: Some("ko"),
            share: 0.024,
            vocab: "ko",
        },
        Language {
            tag: Some("pt"),
            share: 0.05,
            vocab: "pt",
        },
        Language {
            tag: Some("es"),
            share: 0.02,
            vocab: "es",
        },
        Language {
            tag: Some("de"),
            share: 0.015,
            vocab: "de",
        },
        Language {
            tag: Some("fr"),
            share: 0.01,
            vocab: "fr",
        },
    ]
}

pub(crate) const HEAD: &[(&str, &str)] = &[
    (
        "en",
        "weather coffee music game movie book art news election football nba baseball taylor trump \
        bluesky twitter cat dog photo video podcast album song concert team season episode show series \
        school work job money politics climate science space nasa moon rain snow summer winter pizza \
        dinner lunch breakfast birthday friends family kids love happy sad angry tired excited beautiful \
        awesome funny crazy weird world city country america europe london paris tokyo brazil canada \
        police court judge senate congress president government war peace health vaccine doctor hospital \
        tech apple google microsoft openai chatgpt robot code rust python linux phone internet website \
        stream twitch youtube tiktok instagram netflix disney marvel anime manga pokemon nintendo \
        playstation xbox steam garden flowers trees ocean beach mountain travel train car bike running gym \
        yoga food recipe bread cake tea wine beer party holiday christmas halloween weekend monday friday \
        sunset sunrise painting drawing writing poetry novel author library museum history economy market \
        stocks crypto bitcoin housing rent prices inflation tariffs strike union workers protest vote \
        democracy rights media journalism newspaper radio tv hockey soccer tennis golf olympics worldcup \
        playoffs coach player fans stadium goal touchdown",
    ),
    (
        "ja",
        "地震 天気 仕事 映画 音楽 写真 電車 会社 学校 野球 選挙 政治 台風 花火 猫 犬 ラーメン アニメ \
        ゲーム ニュース コーヒー イベント ライブ ドラマ 漫画 東京 大阪 京都 旅行 料理 弁当 お茶 \
        誕生日 友達 家族 子供 病院 雨 雪 夏休み 紅葉 新幹線 イラスト 配信 動画 投稿 作品 練習 試合 \
        優勝 応援 選手 監督 声優 新曲 発売 予約 限定 コラボ グッズ カフェ パン ケーキ ビール",
    ),
    (
        "ko",
        "날씨 영화 음악 사진 회사 학교 야구 선거 정치 고양이 강아지 커피 게임 뉴스 드라마 아이돌 \
        콘서트 여행 서울 라면 치킨 떡볶이 축구 경기 선수 팬 앨범 노래 방송 유튜브 친구 가족 생일 \
        주말 월요일 금요일 여름 겨울 비 눈 바다 산",
    ),
    (
        "pt",
        "jogo futebol flamengo corinthians palmeiras brasil lula bolsonaro chuva calor praia música \
        filme novela trabalho escola amor saudade cerveja comida cidade governo eleição copa gol festa \
        carnaval samba livro gato cachorro notícia política show série episódio time torcida",
    ),
    (
        "es",
        "partido fútbol madrid barcelona gobierno elecciones lluvia calor playa música película \
        trabajo escuela amor cerveza comida ciudad fiesta libro gato perro mundo noticias política \
        serie equipo gol concierto viaje",
    ),
    (
        "de",
        "wetter fußball bayern regierung wahl regen sommer musik film arbeit schule liebe bier essen \
        stadt bahn berlin katze hund buch nachrichten politik serie spiel tor konzert urlaub",
    ),
    (
        "fr",
        "match football gouvernement élection pluie été musique film travail école amour vin fromage \
        ville paris chat chien livre actualité grève politique série équipe but concert voyage",
    ),
];

pub(crate) const FUNCTION_WORDS: &[(&str, &str)] = &[
    (
        "en",
        "the the the a a to to and and of in is is it i i you this that for on with my so just \
        lol but be are was have not all we they what when about like get can do if out up me now one \
        good morning really today",
    ),
    (
        "pt",
        "o a de que e do da em um para é com não uma os no se na por mais as dos como mas",
    ),
    (
        "es",
        "de la que el en y a los del se las por un para con no una su al lo como más pero",
    ),
    (
        "de",
        "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch",
    ),
    (
        "fr",
        "de la le et les des en un du une que est pour qui dans par plus pas au sur ne se",
    ),
    (
        "ja",
        "が は の を に で と も です ます ました でした けど から まで よ ね な",
    ),
    (
        "ko",
        "정말 진짜 그냥 너무 오늘 그리고 근데 이거 우리 나는 ㅋㅋ",
    ),
];

fn list(table: &[(&str, &'static str)], lang: &str) -> Vec<&'static str> {
    table
        .iter()
        .find(|(l, _)| *l == lang)
        .map(|(_, w)| w.split_whitespace().collect())
        .unwrap_or_default()
}

/// Content words of `lang`: the real head words, then `tail` generated ones.
pub fn content_words(lang: &str, tail: usize, rng: &mut Rng) -> Vec<String> {
    let mut words: Vec<String> = list(HEAD, lang).into_iter().map(String::from).collect();
    let mut seen: std::collections::HashSet<String> = words.iter().cloned().collect();
    while words.len() < list(HEAD, lang).len() + tail {
        let w = generated_word(lang, rng);
        if seen.insert(w.clone()) {
            words.push(w);
        }
    }
    words
}

pub fn function_words(lang: &str) -> Vec<&'static str> {
    list(FUNCTION_WORDS, lang)
}

fn generated_word(lang: &str, rng: &mut Rng) -> String {
    match lang {
        "ja" => {
            // Katakana words of 3-5 morae (kept whole by the tokenizer).
            const KANA: &[char] = &[
                'ア', 'イ', 'ウ', 'カ', 'キ', 'ク', 'サ', 'シ', 'ス', 'タ', 'ト', 'ナ', 'ニ', 'マ',
                'ミ', 'ラ', 'リ', 'ル', 'ロ', 'パ', 'ポ', 'ベ', 'ド', 'ガ',
            ];
            let n = 3 + rng.below(3);
            (0..n).map(|_| KANA[rng.below(KANA.len())]).collect()
        }
        "ko" => {
            let n = 2 + rng.below(2);
            (0..n)
                .map(|_| char::from_u32(0xAC00 + rng.below(11172) as u32).unwrap_or('가'))
                .collect()
        }
        _ => {
            const C: &[&str] = &[
                "b", "c", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br",
                "tr", "st", "ch", "sh",
            ];
            const V: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou", "ea"];
            let n = 2 + rng.below(3);
            let mut w = String::new();
            for _ in 0..n {
                w.push_str(C[rng.below(C.len())]);
                w.push_str(V[rng.below(V.len())]);
            }
            if rng.chance(0.4) {
                w.push_str(C[rng.below(10)]);
            }
            w
        }
    }
}
