// Sends the interop message with System.Net.Mail.SmtpClient, the API most
// old Windows line-of-business applications use, here under Mono.
// Settings come from the environment (see e2e/interop/harness_test.go).
// SmtpClient speaks STARTTLS only (EnableSsl): it has no implicit TLS; and
// Mono's offers TLS 1.0 only, whatever ServicePointManager says, so the relay
// needs min_tls_version = "1.0" and an RSA certificate for it (see README).
using System;
using System.IO;
using System.Net;
using System.Net.Mail;
using System.Net.Mime;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using System.Text;

class Send
{
    static string Env(string k) => Environment.GetEnvironmentVariable(k);

    static int Main()
    {
        // .NET trusts the machine's store; an application that must trust a
        // private CA checks the chain against it in this callback.
        var ca = new X509Certificate2(File.ReadAllBytes(Env("SMTP_CA_FILE")));
        ServicePointManager.ServerCertificateValidationCallback = (sender, cert, chain, errors) =>
        {
            if ((errors & SslPolicyErrors.RemoteCertificateNameMismatch) != 0 || cert == null)
                return false;
            var c = new X509Chain();
            c.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            c.ChainPolicy.VerificationFlags = X509VerificationFlags.AllowUnknownCertificateAuthority;
            c.ChainPolicy.ExtraStore.Add(ca);
            if (!c.Build(new X509Certificate2(cert)))
                return false;
            var root = c.ChainElements[c.ChainElements.Count - 1].Certificate;
            return root.Thumbprint == ca.Thumbprint;
        };

        // What .NET Framework 4.x applications set to reach TLS 1.2 servers.
        ServicePointManager.SecurityProtocol = SecurityProtocolType.Tls12;

        var m = new MailMessage();
        m.From = new MailAddress(Env("MAIL_FROM"), Env("MAIL_FROM_NAME"), Encoding.UTF8);
        m.To.Add(Env("MAIL_TO"));
        m.CC.Add(Env("MAIL_CC"));
        m.Subject = Env("MAIL_SUBJECT");
        m.SubjectEncoding = Encoding.UTF8;
        m.Body = Env("MAIL_TEXT");
        // Encoding.UTF8 would put a byte order mark before Mono's text.
        m.BodyEncoding = new UTF8Encoding(false);
        var path = Env("MAIL_ATTACHMENT");
        m.Attachments.Add(new Attachment(path, "application/pdf"));

        using (var c = new SmtpClient(Env("SMTP_HOST"), int.Parse(Env("SMTP_PORT"))))
        {
            c.DeliveryMethod = SmtpDeliveryMethod.Network;
            c.UseDefaultCredentials = false;
            // "none": no TLS and no AUTH, the client trusted by its address.
            if (Env("SMTP_SECURITY") != "none")
            {
                c.EnableSsl = true; // STARTTLS
                c.Credentials = new NetworkCredential(Env("SMTP_USER"), Env("SMTP_PASSWORD"));
            }
            c.Timeout = 30000;
            try
            {
                c.Send(m);
            }
            catch (Exception ex)
            {
                Console.Error.WriteLine("SmtpClient: " + ex);
                return 1;
            }
        }
        Console.WriteLine("sent");
        return 0;
    }
}
