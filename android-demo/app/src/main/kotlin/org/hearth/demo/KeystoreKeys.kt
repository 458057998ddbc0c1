package org.hearth.demo

import android.content.Context
import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyPermanentlyInvalidatedException
import android.security.keystore.KeyProperties
import android.security.keystore.UserNotAuthenticatedException
import org.hearth.KeyException
import org.hearth.KeyProvider
import java.io.File
import java.io.IOException
import java.security.GeneralSecurityException
import java.security.KeyStore
import java.security.SecureRandom
import javax.crypto.AEADBadTagException
import javax.crypto.Cipher
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import javax.crypto.spec.GCMParameterSpec

/**
 * Hearth's root key over the Android Keystore: 32 random bytes, wrapped
 * (AES-256-GCM) by a non-exportable Keystore key, stored wrapped in the app's
 * no-backup directory. The Keystore key never leaves the Keystore (or the
 * StrongBox/TEE behind it); the root key exists in clear only in memory.
 *
 * The wrapping key does not require user authentication or an unlocked
 * device: the federated worker runs while the phone charges at night, locked.
 * Hearth calls rootKey() when a store is opened, deleted or re-keyed, on the
 * calling thread (Dispatchers.IO here); it must not call back into Hearth.
 */
class KeystoreKeys(context: Context) : KeyProvider {
    private val wrappedFile = File(context.noBackupFilesDir, "hearth-root-key.wrapped")

    @Synchronized
    override fun rootKey(): ByteArray =
        try {
            val wrappingKey = keystoreKey()
            if (wrappedFile.exists()) {
                // No Keystore key for an existing wrapped key: the Keystore was cleared, or this is a restored copy.
                unwrap(wrappingKey ?: throw KeyException.Invalidated(), wrappedFile.readBytes())
            } else {
                // First run (or the file was removed: the old store then fails with WrongKey and is reset).
                create(wrappingKey ?: generateKeystoreKey())
            }
        } catch (e: KeyPermanentlyInvalidatedException) {
            throw KeyException.Invalidated()
        } catch (e: AEADBadTagException) {
            // The wrapped key does not open under the Keystore key: it was replaced.
            throw KeyException.Invalidated()
        } catch (e: UserNotAuthenticatedException) {
            throw KeyException.Unavailable("user not authenticated")
        } catch (e: GeneralSecurityException) {
            throw KeyException.Unavailable("keystore: ${e.javaClass.simpleName}")
        } catch (e: IOException) {
            throw KeyException.Unavailable("key file: ${e.javaClass.simpleName}")
        }

    private fun keystoreKey(): SecretKey? {
        val keyStore = KeyStore.getInstance(ANDROID_KEYSTORE).apply { load(null) }
        return keyStore.getKey(ALIAS, null) as SecretKey?
    }

    private fun generateKeystoreKey(): SecretKey {
        val spec = KeyGenParameterSpec.Builder(ALIAS, KeyProperties.PURPOSE_ENCRYPT or KeyProperties.PURPOSE_DECRYPT)
            .setBlockModes(KeyProperties.BLOCK_MODE_GCM)
            .setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
            .setKeySize(256)
            .build()
        return KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, ANDROID_KEYSTORE).run {
            init(spec)
            generateKey()
        }
    }

    /** A new root key, wrapped and written (atomically: a temporary file renamed over). */
    private fun create(wrappingKey: SecretKey): ByteArray {
        val root = ByteArray(32).also { SecureRandom().nextBytes(it) }
        val cipher = Cipher.getInstance(TRANSFORMATION)
        cipher.init(Cipher.ENCRYPT_MODE, wrappingKey) // the Keystore picks a random 12-byte IV
        cipher.updateAAD(AAD)
        val sealed = cipher.doFinal(root)
        val iv = cipher.iv
        val tmp = File(wrappedFile.path + ".tmp")
        tmp.writeBytes(byteArrayOf(iv.size.toByte()) + iv + sealed)
        if (!tmp.renameTo(wrappedFile)) throw IOException("rename failed")
        return root
    }

    private fun unwrap(wrappingKey: SecretKey, stored: ByteArray): ByteArray {
        val ivLength = stored.firstOrNull()?.toInt() ?: throw KeyException.Invalidated()
        if (ivLength !in 12..16 || stored.size < 1 + ivLength + 16) throw KeyException.Invalidated()
        val cipher = Cipher.getInstance(TRANSFORMATION)
        cipher.init(Cipher.DECRYPT_MODE, wrappingKey, GCMParameterSpec(128, stored, 1, ivLength))
        cipher.updateAAD(AAD)
        val root = cipher.doFinal(stored, 1 + ivLength, stored.size - 1 - ivLength)
        if (root.size != 32) throw KeyException.Invalidated()
        return root
    }

    private companion object {
        const val ANDROID_KEYSTORE = "AndroidKeyStore"
        const val ALIAS = "org.hearth.demo.root-key-wrap"
        const val TRANSFORMATION = "AES/GCM/NoPadding"
        val AAD = "hearth root key v1".toByteArray()
    }
}
