"""The words on the customer's pages, per language; a language without its own falls back to
English. Language names come from Babel, each in its own language."""

from __future__ import annotations

from functools import cache

from babel import Locale, UnknownLocaleError

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "preferences": "Your email preferences",
        "intro": "Choose what we send you. Changes apply from the next email.",
        "topics": "Topics",
        "frequency": "How often",
        "frequency_any": "Whenever there is something new",
        "frequency_weekly": "At most once a week",
        "frequency_monthly": "At most once a month",
        "language": "Language",
        "everything": "All marketing emails",
        "unsubscribe_all": "Unsubscribe from all marketing emails",
        "unsubscribed_note": "You are unsubscribed from all marketing emails. Untick the box to hear from us again.",
        "save": "Save",
        "saved": "Your preferences are saved.",
        "unsubscribe": "Unsubscribe",
        "unsubscribe_topic": "Stop emails about “{topic}”?",
        "unsubscribe_everything": "Stop all marketing emails?",
        "unsubscribed_topic": "You will no longer get emails about “{topic}”.",
        "unsubscribed_everything": "You will no longer get marketing emails.",
        "manage": "Manage all your email preferences",
        "confirmed": "Thank you",
        "confirmed_text": "Your email address is confirmed.",
        "error_404": "This link is not valid. It may be incomplete: try copying it again from the email.",
        "error_403": "This form has expired. Reload the page and try again.",
        "error_400": "Some of the choices were not understood. Reload the page and try again.",
        "error_405": "This page cannot be used that way.",
        "error_413": "The request is too large.",
        "error": "Something went wrong",
        "rating": "Your rating",
        "rating_question_10": "How likely are you to recommend us? ({low} = not at all, {high} = extremely)",
        "rating_question_5": "How satisfied are you? ({low} = not at all, {high} = very)",
        "rating_saved": "Thank you: your rating is recorded. You can still change it or tell us more.",
        "rating_send": "Send my rating",
        "comment": "Anything you would like to tell us? (optional)",
        "comment_too_long": "Your comment is too long: at most {limit} characters.",
        "alert": "Low rating",
        "alert_rated": "{customer} rated {score} of {scale}",
        "alert_when": "Rated on {when}",
        "alert_about": "About: {campaign}",
        "alert_no_comment": "No comment.",
        "alert_promise": "Please answer the customer within 4 hours. Tell the team you are on it first.",
        "alert_on_it": "I'm on it",
        "alert_acknowledged": "Acknowledged at {when}.",
    },
    "ar": {
        "preferences": "تفضيلات البريد الإلكتروني",
        "intro": "اختر ما نرسله إليك. تسري التغييرات من الرسالة التالية.",
        "topics": "المواضيع",
        "frequency": "عدد الرسائل",
        "frequency_any": "كلما كان هناك جديد",
        "frequency_weekly": "مرة في الأسبوع على الأكثر",
        "frequency_monthly": "مرة في الشهر على الأكثر",
        "language": "اللغة",
        "everything": "كل الرسائل التسويقية",
        "unsubscribe_all": "إلغاء الاشتراك في كل الرسائل التسويقية",
        "unsubscribed_note": "لقد ألغيت اشتراكك في كل الرسائل التسويقية. أزل العلامة لتصلك رسائلنا من جديد.",
        "save": "حفظ",
        "saved": "تم حفظ تفضيلاتك.",
        "unsubscribe": "إلغاء الاشتراك",
        "unsubscribe_topic": "إيقاف الرسائل عن «{topic}»؟",
        "unsubscribe_everything": "إيقاف كل الرسائل التسويقية؟",
        "unsubscribed_topic": "لن تصلك بعد الآن رسائل عن «{topic}».",
        "unsubscribed_everything": "لن تصلك بعد الآن رسائل تسويقية.",
        "manage": "إدارة كل تفضيلات البريد الإلكتروني",
        "confirmed": "شكراً لك",
        "confirmed_text": "تم تأكيد عنوان بريدك الإلكتروني.",
        "error_404": "هذا الرابط غير صالح. ربما نُسخ ناقصاً: جرّب نسخه من الرسالة مرة أخرى.",
        "error_403": "انتهت صلاحية هذا النموذج. أعد تحميل الصفحة وحاول مرة أخرى.",
        "error_400": "تعذّر فهم بعض الاختيارات. أعد تحميل الصفحة وحاول مرة أخرى.",
        "error_405": "لا يمكن استخدام هذه الصفحة بهذه الطريقة.",
        "error_413": "الطلب كبير جداً.",
        "error": "حدث خطأ",
        "rating": "تقييمك",
        "rating_question_10": "ما مدى احتمال أن توصي بنا؟ ({low} = غير محتمل إطلاقاً، {high} = محتمل جداً)",
        "rating_question_5": "ما مدى رضاك؟ ({low} = غير راضٍ إطلاقاً، {high} = راضٍ جداً)",
        "rating_saved": "شكراً لك: تم تسجيل تقييمك. ما زال بإمكانك تغييره أو إخبارنا بالمزيد.",
        "rating_send": "أرسل تقييمي",
        "comment": "هل تود أن تخبرنا بشيء؟ (اختياري)",
        "comment_too_long": "تعليقك طويل جداً: {limit} حرف على الأكثر.",
        "alert": "تقييم منخفض",
        "alert_rated": "قيّم {customer} بـ {score} من {scale}",
        "alert_when": "في {when}",
        "alert_about": "بخصوص: {campaign}",
        "alert_no_comment": "بلا تعليق.",
        "alert_promise": "يرجى الرد على العميل خلال 4 ساعات. أخبر الفريق أولاً أنك تتولى الأمر.",
        "alert_on_it": "أتولى الأمر",
        "alert_acknowledged": "تم التكفل به في {when}.",
    },
}


def texts(locale: str) -> dict[str, str]:
    return TEXTS.get(locale.split("-")[0], TEXTS["en"])


@cache
def direction(locale: str) -> str:
    """'rtl' for Arabic, Hebrew, Persian, ...; 'ltr' otherwise."""
    try:
        return Locale.parse(locale.replace("-", "_")).text_direction
    except (UnknownLocaleError, ValueError):
        return "ltr"


@cache
def language_name(locale: str) -> str:
    """The language's name in itself: English, العربية."""
    try:
        return Locale.parse(locale.replace("-", "_")).get_display_name(locale.replace("-", "_")) or locale
    except (UnknownLocaleError, ValueError):
        return locale
