// Sends the interop message with nodemailer, as a Node.js application
// configures it. Settings come from the environment (see
// e2e/interop/harness_test.go).
'use strict';
const fs = require('fs');
const path = require('path');
const nodemailer = require('nodemailer');

const e = process.env;
const implicit = e.SMTP_SECURITY === 'tls';
const transport = nodemailer.createTransport({
  host: e.SMTP_HOST,
  port: Number(e.SMTP_PORT),
  name: 'app.test',
  secure: implicit, // implicit TLS
  requireTLS: !implicit, // STARTTLS, or fail
  auth: { user: e.SMTP_USER, pass: e.SMTP_PASSWORD },
  tls: { ca: [fs.readFileSync(e.SMTP_CA_FILE)], rejectUnauthorized: true },
});

transport.sendMail({
  from: { name: e.MAIL_FROM_NAME, address: e.MAIL_FROM },
  to: e.MAIL_TO,
  cc: e.MAIL_CC,
  subject: e.MAIL_SUBJECT,
  text: e.MAIL_TEXT,
  attachments: [{ filename: path.basename(e.MAIL_ATTACHMENT), path: e.MAIL_ATTACHMENT, contentType: 'application/pdf' }],
}).then((info) => {
  console.log('sent:', info.response);
}, (err) => {
  console.error('nodemailer:', err.message);
  process.exit(1);
});
