// Package interop proves that the mail clients legacy software uses can
// submit through the relay: each test drives a real client (nodemailer,
// PHPMailer, Jakarta Mail, .NET SmtpClient under Mono, Perl Net::SMTP,
// curl, s-nail, swaks, msmtp, Python's smtplib, Postfix) over STARTTLS
// with AUTH, and over implicit TLS where the client can, and checks the
// message the Microsoft 365 emulator receives: envelope, decoded
// non-ASCII subject and attachment bytes.
//
// The client programs live beside the tests (node/, php/, java/, mono/,
// perl/, python/); test.sh installs the clients when run as root.
package interop
