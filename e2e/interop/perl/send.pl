#!/usr/bin/perl
# Sends the interop message with Net::SMTP (STARTTLS or SMTPS through
# IO::Socket::SSL, AUTH through Authen::SASL), building the MIME with
# core modules as a plain Perl script would. Settings come from the
# environment (see e2e/interop/harness_test.go).
use strict;
use warnings;
use Encode qw(encode);
use MIME::Base64 qw(encode_base64);
use File::Basename qw(basename);
use Net::SMTP;

my %e = %ENV;
my @tls = (SSL_ca_file => $e{SMTP_CA_FILE}, SSL_verify_mode => 1, SSL_verifycn_name => $e{SMTP_HOST});
my $smtp = Net::SMTP->new($e{SMTP_HOST}, Port => $e{SMTP_PORT}, Hello => 'app.test', Timeout => 30,
	($e{SMTP_SECURITY} eq 'tls' ? (SSL => 1, @tls) : ()))
	or die "connect: $@\n";
if ($e{SMTP_SECURITY} ne 'tls') {
	$smtp->starttls(@tls) or die "STARTTLS: " . $smtp->message . " $IO::Socket::SSL::SSL_ERROR\n";
}
$smtp->auth($e{SMTP_USER}, $e{SMTP_PASSWORD}) or die "AUTH: " . $smtp->message;

# Environment values are UTF-8 bytes: decode them before MIME-encoding.
my $subject = encode('MIME-B', Encode::decode('UTF-8', $e{MAIL_SUBJECT}));
my $name = encode('MIME-B', Encode::decode('UTF-8', $e{MAIL_FROM_NAME}));
open(my $fh, '<:raw', $e{MAIL_ATTACHMENT}) or die "$e{MAIL_ATTACHMENT}: $!\n";
my $data = do { local $/; <$fh> };
close $fh;
my $file = basename($e{MAIL_ATTACHMENT});
my $b = "=_oauthrelay_interop_" . time;
my $msg = join("\r\n",
	"From: $name <$e{MAIL_FROM}>",
	"To: $e{MAIL_TO}",
	"Cc: $e{MAIL_CC}",
	"Subject: $subject",
	"MIME-Version: 1.0",
	"Content-Type: multipart/mixed; boundary=\"$b\"",
	"",
	"--$b",
	"Content-Type: text/plain; charset=UTF-8",
	"Content-Transfer-Encoding: base64",
	"",
	encode_base64($e{MAIL_TEXT}, "\r\n"),
	"--$b",
	"Content-Type: application/pdf; name=\"$file\"",
	"Content-Disposition: attachment; filename=\"$file\"",
	"Content-Transfer-Encoding: base64",
	"",
	encode_base64($data, "\r\n"),
	"--$b--",
	"");

$smtp->mail($e{MAIL_FROM}) or die "MAIL: " . $smtp->message;
$smtp->to($e{MAIL_TO}, $e{MAIL_CC}) or die "RCPT: " . $smtp->message;
$smtp->data($msg) or die "DATA: " . $smtp->message;
print "sent: ", $smtp->message;
$smtp->quit;
