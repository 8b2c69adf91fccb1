//! Stopword lists (function words and social-media fillers), one string per language.

pub(super) const LISTS: &[(&str, &str)] = &[
    (
        "en",
        "a about above after again against all almost also am an and any are aren't as at be \
        because been before being below between both but by can can't cannot could couldn't did didn't \
        do does doesn't doing don't down during each even ever every few for from further get gets \
        getting got gonna had hadn't has hasn't have haven't having he he'd he'll he's her here here's \
        hers herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its \
        itself just let's like me might more most much must mustn't my myself need never no nor not now \
        of off oh ok okay on once one only or other ought our ours ourselves out over own really same \
        say said see seen shan't she she'd she'll she's should shouldn't so some still such than that \
        that's the their theirs them themselves then there there's these they they'd they'll they're \
        they've thing things this those though through to too under until up upon us very via was \
        wasn't way we we'd we'll we're we've well were weren't what what's when when's where where's \
        which while who who's whom why why's will with won't would wouldn't yeah yes yet you you'd \
        you'll you're you've your yours yourself yourselves im ive dont cant didnt doesnt isnt wasnt \
        wont thats youre theyre lol lmao lmfao omg gm gn rt tbh imo idk btw pls please thanks thank \
        good morning night day go going know think want make made makes time new lot lots people \
        also back first last many may right sure still something anything everything nothing someone \
        anyone everyone us around amp www http https com",
    ),
    (
        "pt",
        "a à ao aos as às até com como da das de dela dele deles do dos e é ela elas ele eles em \
        entre era essa esse esta está estão este eu foi for há isso isto já la lá lhe mais mas me \
        mesmo meu minha muito na não nas nem no nos nós o os ou para pela pelo por porque pra que \
        quem se sem ser seu sua são também te tem tá tô um uma vai você vocês vc q tb bom dia",
    ),
    (
        "es",
        "a al algo algunos ante antes como con contra cual cuando de del desde donde durante e el \
        él ella ellas ellos en entre era es esa ese eso esta está están este esto estos fue ha hay la \
        las le les lo los más me mi mis mucho muy nada ni no nos o os otra otro para pero poco por \
        porque que qué quien se sea ser si sí sin sobre son su sus también te tiene todo todos tu tus \
        un una uno unos y ya yo hoy buenos días",
    ),
    (
        "de",
        "aber alle als also am an auch auf aus bei bin bis bist da dann das dass dein dem den der \
        des dich die dir doch du ein eine einem einen einer es für gibt habe haben hat hier ich ihr \
        im in ist ja kann kein man mein mich mir mit nach nicht noch nur ob oder schon sehr sein sich \
        sie sind so über um und uns unser vom von vor war was wenn wer wie wir wird zu zum zur guten",
    ),
    (
        "fr",
        "à au aux avec ce ces c'est dans de des du elle elles en est et eux il ils je j'ai la le \
        les leur lui ma mais me même mes moi mon ne nos notre nous on ou où par pas pour qu que qui \
        sa se ses son sur ta te tes toi ton tu un une vos votre vous y été être avoir fait plus tout \
        très bien bonjour",
    ),
    (
        "it",
        "a ad al alla alle anche che chi ci con da dei del della di e è gli ha ho i il in io la le \
        lei lo loro lui ma mi mio ne nel nella noi non per più quella questo se si sono su sua suo \
        tra tu un una uno vi",
    ),
    (
        "nl",
        "aan al als bij dan dat de die dit een en er had heb heeft het hij hoe ik in is je kan \
        maar me met mijn na naar niet nog nu of om ook op te tot u uit van voor was wat we wel wij \
        zijn zo",
    ),
    (
        "ja",
        "今日 明日 昨日 自分 本当 時間 一番 今年 今回 最近 感じ 気持 持ち 人達 私達 日本 皆さ 何か \
        ここ そこ これ それ あれ どれ イイ ホント マジ",
    ),
    (
        "ko",
        "그리고 그런데 그래서 하지만 그냥 정말 진짜 너무 오늘 내일 어제 이거 그거 저거 우리 저는 \
        나는 제가 내가 있는 있다 없다 했다 하는 합니다 입니다 ㅋㅋ ㅋㅋㅋ ㅎㅎ",
    ),
];
