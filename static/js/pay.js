// The fake provider's payment page: shows the amount in the reader's own format and sends
// the payer's decision; the service then hears of it through the provider's webhook.
const root = document.getElementById("pay");
const { paymentId, currency } = root.dataset;
const minor = Number(root.dataset.amount);
const result = document.getElementById("result");
const buttons = [document.getElementById("approve"), document.getElementById("decline")];

function formatMoney(amount, code) {
  const format = new Intl.NumberFormat(undefined, { style: "currency", currency: code });
  const digits = format.resolvedOptions().maximumFractionDigits;
  return format.format(amount / 10 ** digits);
}

function showStatus(status) {
  const done = status !== "requires_action";
  for (const b of buttons) b.disabled = done;
  if (done) result.textContent = `This payment is ${status.replace("_", " ")}.`;
}

async function decide(decision) {
  for (const b of buttons) b.disabled = true;
  result.textContent = "Sending…";
  try {
    const r = await fetch(`/pay/fake/${encodeURIComponent(paymentId)}`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ decision }),
    });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
    showStatus(body.payment.status);
  } catch (err) {
    result.textContent = `Could not send: ${err.message}`;
    for (const b of buttons) b.disabled = false;
  }
}

document.getElementById("amount").textContent = formatMoney(minor, currency);
buttons[0].addEventListener("click", () => decide("approve"));
buttons[1].addEventListener("click", () => decide("decline"));
showStatus(root.dataset.status);
