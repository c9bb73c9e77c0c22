"""Sends the interop message with Python's smtplib and email packages,
as a Django or cron script would. Settings come from the environment
(see e2e/interop/harness_test.go)."""
import mimetypes
import os
import smtplib
import ssl
from email.message import EmailMessage
from email.headerregistry import Address

env = os.environ
msg = EmailMessage()
msg["Subject"] = env["MAIL_SUBJECT"]
msg["From"] = Address(env["MAIL_FROM_NAME"], addr_spec=env["MAIL_FROM"])
msg["To"] = env["MAIL_TO"]
msg["Cc"] = env["MAIL_CC"]
msg.set_content(env["MAIL_TEXT"])
path = env["MAIL_ATTACHMENT"]
with open(path, "rb") as f:
    msg.add_attachment(f.read(), maintype="application", subtype="pdf",
                       filename=os.path.basename(path))

# Verify the relay against the test CA only.
ctx = ssl.create_default_context(cafile=env["SMTP_CA_FILE"])
host, port = env["SMTP_HOST"], int(env["SMTP_PORT"])
if env["SMTP_SECURITY"] == "tls":
    s = smtplib.SMTP_SSL(host, port, local_hostname="app.test", timeout=30, context=ctx)
else:
    s = smtplib.SMTP(host, port, local_hostname="app.test", timeout=30)
    s.starttls(context=ctx)
with s:
    s.login(env["SMTP_USER"], env["SMTP_PASSWORD"])
    refused = s.send_message(msg)
    print("sent, refused:", refused)
