// Times and durations in words: "2026-11-02 10:00 UTC (in 1 day)", "Expired … (3 hours ago)".

function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

export function duration(seconds) {
  const minutes = Math.round(seconds / 60);
  if (minutes < 1) return 'less than a minute';
  if (minutes < 60) return plural(minutes, 'minute');
  const hours = Math.floor(minutes / 60);
  if (hours < 24) {
    const m = minutes % 60;
    return m ? `${plural(hours, 'hour')} ${plural(m, 'minute')}` : plural(hours, 'hour');
  }
  const days = Math.floor(hours / 24);
  const h = hours % 24;
  if (days < 7 && h) return `${plural(days, 'day')} ${plural(h, 'hour')}`;
  return plural(days, 'day');
}

export function when(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return `${date.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

// "2026-11-02 10:00 UTC (in 1 day)", or "Expired 2026-11-02 10:00 UTC (3 hours ago)".
function expiry(iso) {
  const left = (new Date(iso).getTime() - Date.now()) / 1000;
  if (left <= 0) return { text: `Expired ${when(iso)} (${duration(-left)} ago)`, expired: true };
  return { text: `${when(iso)} (in ${duration(left)})`, expired: false };
}

// Elements showing time left carry data-expires; a timer keeps them current.
export function showExpiry(element, iso) {
  element.dataset.expires = iso;
  const { text, expired } = expiry(iso);
  element.textContent = text;
  element.classList.toggle('expired', expired);
}

export function refreshExpiries() {
  for (const element of document.querySelectorAll('[data-expires]')) {
    showExpiry(element, element.dataset.expires);
  }
}
