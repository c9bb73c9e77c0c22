import jakarta.activation.DataHandler;
import jakarta.activation.FileDataSource;
import jakarta.mail.Message;
import jakarta.mail.Session;
import jakarta.mail.Transport;
import jakarta.mail.internet.InternetAddress;
import jakarta.mail.internet.MimeBodyPart;
import jakarta.mail.internet.MimeMessage;
import jakarta.mail.internet.MimeMultipart;
import java.io.FileInputStream;
import java.io.File;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import java.util.Map;
import java.util.Properties;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

/**
 * Sends the interop message with Jakarta Mail, as a Java application
 * configures it. Settings come from the environment (see
 * e2e/interop/harness_test.go).
 */
public class Send {
    public static void main(String[] args) throws Exception {
        Map<String, String> e = System.getenv();
        boolean implicit = e.get("SMTP_SECURITY").equals("tls");
        String proto = "smtp";

        // Trust the relay's test CA only.
        KeyStore ks = KeyStore.getInstance(KeyStore.getDefaultType());
        ks.load(null, null);
        try (FileInputStream in = new FileInputStream(e.get("SMTP_CA_FILE"))) {
            ks.setCertificateEntry("relay-ca", CertificateFactory.getInstance("X.509").generateCertificate(in));
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(ks);
        SSLContext ssl = SSLContext.getInstance("TLS");
        ssl.init(null, tmf.getTrustManagers(), null);

        Properties p = new Properties();
        String k = "mail." + proto + ".";
        p.put(k + "host", e.get("SMTP_HOST"));
        p.put(k + "port", e.get("SMTP_PORT"));
        p.put(k + "localhost", "app.test");
        p.put(k + "auth", "true");
        p.put(k + "ssl.socketFactory", ssl.getSocketFactory());
        p.put(k + "ssl.checkserveridentity", "true");
        p.put(k + "connectiontimeout", "30000");
        p.put(k + "timeout", "30000");
        if (implicit) {
            p.put(k + "ssl.enable", "true");
        } else {
            p.put(k + "starttls.enable", "true");
            p.put(k + "starttls.required", "true");
        }
        Session session = Session.getInstance(p);

        MimeMessage m = new MimeMessage(session);
        m.setFrom(new InternetAddress(e.get("MAIL_FROM"), e.get("MAIL_FROM_NAME"), "UTF-8"));
        m.setRecipients(Message.RecipientType.TO, e.get("MAIL_TO"));
        m.setRecipients(Message.RecipientType.CC, e.get("MAIL_CC"));
        m.setSubject(e.get("MAIL_SUBJECT"), "UTF-8");
        MimeBodyPart body = new MimeBodyPart();
        body.setText(e.get("MAIL_TEXT"), "UTF-8");
        MimeBodyPart att = new MimeBodyPart();
        File f = new File(e.get("MAIL_ATTACHMENT"));
        att.setDataHandler(new DataHandler(new FileDataSource(f) {
            @Override
            public String getContentType() {
                return "application/pdf";
            }
        }));
        att.setFileName(f.getName());
        MimeMultipart mp = new MimeMultipart();
        mp.addBodyPart(body);
        mp.addBodyPart(att);
        m.setContent(mp);

        Transport t = session.getTransport(proto);
        t.connect(e.get("SMTP_USER"), e.get("SMTP_PASSWORD"));
        try {
            t.sendMessage(m, m.getAllRecipients());
        } finally {
            t.close();
        }
        System.out.println("sent: " + m.getMessageID());
    }
}
