<?php
// Sends the interop message with PHPMailer (Debian libphp-phpmailer), as a
// PHP application configures it. Settings come from the environment (see
// e2e/interop/harness_test.go).
use PHPMailer\PHPMailer\PHPMailer;
use PHPMailer\PHPMailer\SMTP;

require '/usr/share/php/libphp-phpmailer/autoload.php';

$e = getenv();
$m = new PHPMailer(true);
$m->isSMTP();
$m->Host = $e['SMTP_HOST'];
$m->Port = (int)$e['SMTP_PORT'];
$m->Hostname = 'app.test';
$m->SMTPAuth = true;
$m->Username = $e['SMTP_USER'];
$m->Password = $e['SMTP_PASSWORD'];
// 'tls' is STARTTLS (required: no silent fallback), 'ssl' implicit TLS.
$m->SMTPSecure = $e['SMTP_SECURITY'] === 'tls' ? PHPMailer::ENCRYPTION_SMTPS : PHPMailer::ENCRYPTION_STARTTLS;
$m->SMTPAutoTLS = false;
$m->SMTPOptions = ['ssl' => [
    'verify_peer' => true,
    'verify_peer_name' => true,
    'peer_name' => $e['SMTP_HOST'],
    'cafile' => $e['SMTP_CA_FILE'],
]];
$m->CharSet = PHPMailer::CHARSET_UTF8;
$m->setFrom($e['MAIL_FROM'], $e['MAIL_FROM_NAME']);
$m->addAddress($e['MAIL_TO']);
$m->addCC($e['MAIL_CC']);
$m->Subject = $e['MAIL_SUBJECT'];
$m->Body = $e['MAIL_TEXT'];
$m->addAttachment($e['MAIL_ATTACHMENT'], basename($e['MAIL_ATTACHMENT']), PHPMailer::ENCODING_BASE64, 'application/pdf');
$m->send();
echo "sent: ", $m->getLastMessageID(), "\n";
