// English and Spanish for the family portal's pages. The pages are written in English;
// in Spanish every text, label and message whose English is in ES below is shown in
// Spanish instead: the page's text nodes and the attributes people read (aria-label,
// placeholder, title, alt) when it loads, whatever the scripts add later (a
// MutationObserver), and the messages the scripts show through spI18n.t(). The choice
// follows the browser's language until the person picks one with the switch in the
// header; it is kept in localStorage. Names, numbers and amounts are never translated
// (they match no entry).
'use strict';

const ES = {
  'Family portal': 'Portal familiar',
  'Log in': 'Iniciar sesión',
  'Log out': 'Cerrar sesión',
  'Account': 'Cuenta',
  'Portal': 'Portal',
  'Email address': 'Correo electrónico',
  'Password': 'Contraseña',
  'Create an account': 'Crear una cuenta',
  'Forgot your password?': '¿Olvidó su contraseña?',
  'Password (at least 12 characters)': 'Contraseña (al menos 12 caracteres)',
  'A few words you will remember make a good password.': 'Unas cuantas palabras que recuerde forman una buena contraseña.',
  'Password again': 'Repita la contraseña',
  'Create the account': 'Crear la cuenta',
  'I already have an account': 'Ya tengo una cuenta',
  'Email me a link': 'Envíenme un enlace',
  'Back to log in': 'Volver a iniciar sesión',
  'Choose a new password': 'Elija una contraseña nueva',
  'New password (at least 12 characters)': 'Contraseña nueva (al menos 12 caracteres)',
  'New password again': 'Repita la contraseña nueva',
  'Set the password': 'Guardar la contraseña',
  'Your account': 'Su cuenta',
  'Signed in as': 'Sesión iniciada como',
  'Change your password': 'Cambiar su contraseña',
  'Current password': 'Contraseña actual',
  'Change the password': 'Cambiar la contraseña',
  'Change your email address': 'Cambiar su correo electrónico',
  'New email address': 'Correo electrónico nuevo',
  'Send a confirmation link': 'Enviar un enlace de confirmación',
  'Close your account': 'Cerrar su cuenta',
  'Closing ends every session. It cannot be undone.': 'Cerrarla termina todas las sesiones. No se puede deshacer.',
  'Close the account': 'Cerrar la cuenta',
  'The two passwords are not the same.': 'Las dos contraseñas no son iguales.',
  'Check your email: if the address can receive it, we sent a link. Open it to go on.': 'Revise su correo: si la dirección puede recibirlo, le enviamos un enlace. Ábralo para continuar.',
  'Your email address is confirmed. You can log in now.': 'Su correo electrónico está confirmado. Ya puede iniciar sesión.',
  'Your password is changed. Log in with the new one.': 'Su contraseña se cambió. Inicie sesión con la nueva.',
  'Your password is changed. Other sessions were logged out.': 'Su contraseña se cambió. Las demás sesiones se cerraron.',
  'Your email address is changed. Log in again.': 'Su correo electrónico se cambió. Inicie sesión de nuevo.',
  'Your account is closed.': 'Su cuenta está cerrada.',
  'You are logged out.': 'Cerró la sesión.',
  'Your session has ended. Log in again.': 'Su sesión terminó. Inicie sesión de nuevo.',
  'The portal cannot be reached. Check your connection and try again.': 'No se puede conectar con el portal. Revise su conexión e inténtelo de nuevo.',
  // Prepaid calling.
  'Prepaid calling': 'Llamadas prepagadas',
  'Prepaid calling · Family portal': 'Llamadas prepagadas · Portal familiar',
  'Prepaid calling: your balance and statements': 'Llamadas prepagadas: su saldo y sus estados de cuenta',
  'Please log in': 'Inicie sesión, por favor',
  'Log in to the family portal': 'Inicie sesión en el portal familiar',
  'to see your prepaid calling.': 'para ver sus llamadas prepagadas.',
  'Your prepaid account at a facility pays for calls to your verified numbers and for the visits you book, before the inmate\'s own money is used (unless the facility asks the inmate\'s account first). Your money stays yours: it is never taken for inactivity, and there are no fees.':
    'Su cuenta prepagada en un centro paga las llamadas a sus números verificados y las visitas que usted reserve, antes de usar el dinero del interno (salvo que el centro cobre primero a la cuenta del interno). Su dinero sigue siendo suyo: nunca se lo quitan por inactividad y no hay cargos.',
  'Your prepaid accounts': 'Sus cuentas prepagadas',
  'Facility': 'Centro',
  'Balance': 'Saldo',
  'Pays first': 'Paga primero',
  'Yes': 'Sí',
  'After the inmate\'s account': 'Después de la cuenta del interno',
  'Statement': 'Estado de cuenta',
  'You have no prepaid account yet.': 'Todavía no tiene una cuenta prepagada.',
  'Open a prepaid account': 'Abrir una cuenta prepagada',
  'Open the account': 'Abrir la cuenta',
  'Once a facility approves you as a contact of someone there, you can open a prepaid account at it.': 'Cuando un centro lo apruebe como contacto de alguien allí, podrá abrir una cuenta prepagada en él.',
  'Your prepaid account is open. Add money to it to pay for calls and visits.': 'Su cuenta prepagada está abierta. Agregue dinero para pagar llamadas y visitas.',
  'Period': 'Período',
  'From': 'Desde',
  'To (included)': 'Hasta (incluido)',
  'Show': 'Mostrar',
  'Download as CSV': 'Descargar en CSV',
  'Print': 'Imprimir',
  'All prepaid accounts': 'Todas las cuentas prepagadas',
  'Opening balance': 'Saldo inicial',
  '· closing balance': '· saldo final',
  '· account': '· cuenta',
  'Statement lines': 'Movimientos',
  'Time': 'Fecha y hora',
  'What': 'Concepto',
  'Amount': 'Importe',
  'Nothing happened on this account in this period.': 'No hubo movimientos en esta cuenta en este período.',
  'Deposit': 'Depósito',
  'Money order': 'Giro postal',
  'Refund': 'Reembolso',
  'Refund the balance': 'Reembolsar el saldo',
  // Finding a person and confirming a number.
  'Be a contact of someone in custody': 'Ser contacto de una persona detenida',
  'Find the person, then give one of your phone numbers. We call that number and ask for a code shown here, so only the person holding that phone can add it. Staff then approve or deny the request.':
    'Busque a la persona y luego indique uno de sus números de teléfono. Llamamos a ese número y pedimos un código que se muestra aquí, así solo quien tiene ese teléfono puede agregarlo. Después el personal aprueba o rechaza la solicitud.',
  'Find a person': 'Buscar a una persona',
  'Last name (the whole name)': 'Apellido (completo)',
  'First name or its start (optional)': 'Nombre o su comienzo (opcional)',
  'Or the booking number': 'O el número de registro',
  'Search': 'Buscar',
  'Ask to be a contact': 'Pedir ser contacto',
  'Your name': 'Su nombre',
  'Relationship (optional)': 'Parentesco (opcional)',
  'Your phone number': 'Su número de teléfono',
  'Video visits too': 'También videovisitas',
  'Your requests': 'Sus solicitudes',
  'Nobody in custody there matches. Check the spelling, or search by booking number.': 'Nadie detenido allí coincide. Revise la ortografía o busque por número de registro.',
  'More people match than are shown: add a first name or search by booking number.': 'Coinciden más personas de las que se muestran: agregue un nombre o busque por número de registro.',
  'Choose': 'Elegir',
  'Your request is saved. Now confirm your number: choose "Call me" below.': 'Su solicitud está guardada. Ahora confirme su número: elija "Llámenme" abajo.',
  'Call me to confirm this number': 'Llámenme para confirmar este número',
  'Withdraw': 'Retirar',
  'The request is withdrawn.': 'La solicitud se retiró.',
  'You have no requests yet.': 'Todavía no tiene solicitudes.',
  'Waiting for you to confirm the number': 'Esperando que confirme el número',
  'Not confirmed (too many wrong codes): make a new request': 'No confirmado (demasiados códigos incorrectos): haga una nueva solicitud',
  'Number confirmed; waiting for staff to approve': 'Número confirmado; esperando la aprobación del personal',
  'Approved': 'Aprobada',
  'Denied': 'Rechazada',
  'Withdrawn': 'Retirada',
  'Account to deposit to': 'Cuenta a la que deposita',
  'Choose your prepaid calling account or the account of someone you are a contact of, or type an inmate\'s account number.': 'Elija su cuenta de llamadas prepagadas o la cuenta de alguien de quien es contacto, o escriba el número de cuenta de un interno.',
  // The API's messages the portal shows as they come.
  'wrong email or password, or too many failed attempts (try again later)': 'Correo o contraseña incorrectos, o demasiados intentos fallidos (inténtelo más tarde).',
  'confirm your email address first: open the link we emailed you (register again with the same address to get a new one)': 'Primero confirme su correo electrónico: abra el enlace que le enviamos (regístrese de nuevo con la misma dirección para recibir otro).',
  'this link does not work: it may have been used already or have expired; ask for a new one': 'Este enlace no funciona: puede que ya se haya usado o que haya caducado. Pida uno nuevo.',
  'too many attempts from this network: try again later': 'Demasiados intentos desde esta red: inténtelo más tarde.',
  'the current password is not right': 'La contraseña actual no es correcta.',
  'another account uses this address now; the account keeps its old one': 'Otra cuenta usa ahora esta dirección; la cuenta conserva la anterior.',
  // Deposits by card (deposits.js).
  'Deposits': 'Depósitos',
  'No fees: the amount you send is the amount credited.': 'Sin cargos: se acredita la misma cantidad que envía.',
  'Deposit by card': 'Depósito con tarjeta',
  'Amount in dollars': 'Cantidad en dólares',
  "For example 50.00. The facility's limits apply.": 'Por ejemplo 50.00. Se aplican los límites del centro.',
  'Name on the card': 'Nombre en la tarjeta',
  'Card number': 'Número de tarjeta',
  'Expiry month (1 to 12)': 'Mes de vencimiento (1 a 12)',
  'Expiry year (four digits)': 'Año de vencimiento (cuatro dígitos)',
  'Security code': 'Código de seguridad',
  'Test cards (this portal uses the test payment provider)': 'Tarjetas de prueba (este portal usa el proveedor de pagos de prueba)',
  'Status:': 'Estado:',
  'Timeline': 'Cronología',
  'to account': 'a la cuenta',
  ', card ending': ', tarjeta terminada en',
  'Refresh the status': 'Actualizar el estado',
  'Your deposits': 'Sus depósitos',
  'By money order': 'Por giro postal',
  'submitted': 'enviado',
  'authorized, waiting for the payment provider to confirm': 'autorizado, esperando la confirmación del proveedor de pagos',
  'posted to the account': 'acreditado en la cuenta',
  'declined': 'rechazado',
  'held': 'retenido',
  'voided': 'anulado',
  'refunded to the card': 'reembolsado a la tarjeta',
  'approved, posted at once': 'aprobada, acreditada al instante',
  'approved, confirmed later by webhook': 'aprobada, confirmada más tarde',
  'approved, then declined by the bank': 'aprobada, luego rechazada por el banco',
  'approved, then held for review': 'aprobada, luego retenida para revisión',
  'declined: card_declined': 'rechazada: card_declined',
  'declined: insufficient_funds': 'rechazada: insufficient_funds',
  'English': 'English',
  'Español': 'Español',
  'Language': 'Idioma',
  'Messages': 'Mensajes',
  'Write to someone in custody you are an approved contact of. Staff may read messages before they are delivered, except those with an attorney.': 'Escriba a una persona bajo custodia de la que usted es contacto aprobado. El personal puede leer los mensajes antes de entregarlos, salvo los de un abogado.',
  'Once staff approve you as a contact, you can write here.': 'Cuando el personal lo apruebe como contacto, podrá escribir aquí.',
  'Write a message': 'Escribir un mensaje',
  'To': 'Para',
  'Message': 'Mensaje',
  'Photo (optional: PNG or JPEG)': 'Foto (opcional: PNG o JPEG)',
  'Photos are copied without their hidden details (such as where they were taken).': 'Las fotos se copian sin sus datos ocultos (como el lugar donde se tomaron).',
  'Send': 'Enviar',
  'Check for new messages': 'Ver mensajes nuevos',
  'Messages, oldest first': 'Mensajes, los más antiguos primero',
  'Your message is sent.': 'Su mensaje fue enviado.',
  'Your message is sent. Staff review it before it is delivered.': 'Su mensaje fue enviado. El personal lo revisa antes de entregarlo.',
};

/** Templates: English pattern → Spanish, with $1… for what the English held there (or a
 * function of the matches, as `String.replace` takes). */
const ES_PATTERNS = [
  [/^· Waiting for staff review$/, '· En revisión por el personal'],
  [/^· Delivered$/, '· Entregado'],
  [/^· Not delivered: (.+)$/, '· No entregado: $1'],
  [/^You to (.+), (.+)$/, 'Usted a $1, $2'],
  [/^(.+) to you, (.+)$/, '$1 a usted, $2'],
  [/^Photo from you$/, 'Foto suya'],
  [/^Photo from (.+)$/, 'Foto de $1'],
  [/^Up to (\d+) characters\.$/, 'Hasta $1 caracteres.'],
  [/^Up to (\d+) characters\. Each message costs \$(.+), paid from your prepaid balance at that facility\.$/, 'Hasta $1 caracteres. Cada mensaje cuesta $$$2, pagado de su saldo prepagado en ese centro.'],
  [/^Call to (.+) from (.+), minute block (\d+)$/, 'Llamada a $1 de $2, bloque de minutos $3'],
  [/^Call to (.+), minute block (\d+)$/, 'Llamada a $1, bloque de minutos $2'],
  [/^Video visit with (.+), minute block (\d+)$/, 'Videovisita con $1, bloque de minutos $2'],
  [/^Video visit, minute block (\d+)$/, 'Videovisita, bloque de minutos $1'],
  [/^Statement: (.+)$/, 'Estado de cuenta: $1'],
  [/^Your prepaid calling account, (.+)$/, 'Su cuenta de llamadas prepagadas, $1'],
  [/^Refund the balance: (.+)$/, 'Reembolsar el saldo: $1'],
  [/^Refund (\S+) to the cards that paid it\? There is no fee\.$/, '¿Reembolsar $1 a las tarjetas con que se pagó? No hay cargos.'],
  [/^Refund of (\S+) requested\. (.+)\.$/, (_, total, parts) => `Reembolso de ${total} solicitado. ${parts
    .replace(/ to the card ending /g, ' a la tarjeta terminada en ')
    .replace(/ paid back by the facility/g, ' que le devolverá el centro')}.`],
  [/^(.+), booking number (\S+), (.+)$/, '$1, número de registro $2, $3'],
  [/^Choose (.+) \((.+)\)$/, 'Elegir a $1 ($2)'],
  [/^Asking to be a contact of (.+)\.$/, 'Solicitud para ser contacto de $1.'],
  [/^We are calling (.+) now\. When asked, enter this code on that phone, then the pound key \(#\):$/, 'Estamos llamando al $1. Cuando se le pida, marque este código en ese teléfono y luego la tecla numeral (#):'],
  [/^The code works until (.+)\.$/, 'El código sirve hasta las $1.'],
  [/^Reason: (.+)$/, 'Motivo: $1'],
  [/^Deposit made: confirmation number (.+)$/, 'Depósito hecho: número de confirmación $1'],
  [/^(.+) — (.+), with video visits$/, '$1 — $2, con videovisitas'],
];

const spI18n = (() => {
  const KEY = 'sp-lang';
  function chosen() {
    let stored = null;
    try { stored = localStorage.getItem(KEY); } catch (e) { /* private mode */ }
    if (stored === 'es' || stored === 'en') return stored;
    return (navigator.language || 'en').toLowerCase().startsWith('es') ? 'es' : 'en';
  }
  const lang = chosen();
  function norm(s) { return s.replace(/\s+/g, ' ').trim(); }
  /** The text in the page's language (unchanged when English or not in the table). */
  function t(text) {
    if (lang !== 'es' || typeof text !== 'string') return text;
    const key = norm(text);
    if (Object.prototype.hasOwnProperty.call(ES, key)) return ES[key];
    for (const [re, es] of ES_PATTERNS) {
      if (re.test(key)) return key.replace(re, es);
    }
    return text;
  }
  function node(n) {
    if (n.nodeType === Node.TEXT_NODE) {
      const key = norm(n.nodeValue);
      if (!key) return;
      const es = t(key);
      if (es !== key) {
        const lead = n.nodeValue.match(/^\s*/)[0];
        const tail = n.nodeValue.match(/\s*$/)[0];
        n.nodeValue = lead + es + tail;
      }
      return;
    }
    if (n.nodeType !== Node.ELEMENT_NODE) return;
    if (n.tagName === 'SCRIPT' || n.tagName === 'STYLE' || n.tagName === 'CODE') return;
    for (const a of ['aria-label', 'placeholder', 'title', 'alt']) {
      const v = n.getAttribute(a);
      if (v) { const es = t(v); if (es !== v) n.setAttribute(a, es); }
    }
    for (const c of n.childNodes) node(c);
  }
  function switcher() {
    const nav = document.querySelector('header');
    if (!nav) return;
    const b = document.createElement('button');
    b.type = 'button';
    b.id = 'lang-switch';
    b.lang = lang === 'es' ? 'en' : 'es';
    b.textContent = lang === 'es' ? 'English' : 'Español';
    b.addEventListener('click', () => {
      try { localStorage.setItem(KEY, lang === 'es' ? 'en' : 'es'); } catch (e) { /* kept for this page only */ }
      location.reload();
    });
    nav.appendChild(b);
  }
  function start() {
    document.documentElement.lang = lang;
    switcher();
    if (lang !== 'es') return;
    document.title = t(document.title);
    node(document.body);
    new MutationObserver((changes) => {
      for (const c of changes) {
        if (c.type === 'characterData') node(c.target);
        for (const n of c.addedNodes) node(n);
      }
    }).observe(document.body, { childList: true, subtree: true, characterData: true });
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
  return { t, lang };
})();
